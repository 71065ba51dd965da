use super::*;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Published BIP32 test vectors (BIP-0032, "Test Vectors"): the cases that
/// derive a non-hardened child from an extended public key.
const PUBLIC_DERIVATION_VECTORS: &[(&str, u32, &str)] = &[
    // Vector 1: m/0H -> m/0H/1
    (
        "xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw",
        1,
        "xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ",
    ),
    // Vector 1: m/0H/1/2H -> m/0H/1/2H/2
    (
        "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
        2,
        "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV",
    ),
    // Vector 1: m/0H/1/2H/2 -> m/0H/1/2H/2/1000000000
    (
        "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV",
        1_000_000_000,
        "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTvXEYBVPamhGW6cFJodrTHy",
    ),
    // Vector 2: m -> m/0
    (
        "xpub661MyMwAqRbcFW31YEwpkMuc5THy2PSt5bDMsktWQcFF8syAmRUapSCGu8ED9W6oDMSgv6Zz8idoc4a6mr8BDzTJY47LJhkJ8UB7WEGuduB",
        0,
        "xpub69H7F5d8KSRgmmdJg2KhpAK8SR3DjMwAdkxj3ZuxV27CprR9LgpeyGmXUbC6wb7ERfvrnKZjXoUmmDznezpbZb7ap6r1D3tgFxHmwMkQTPH",
    ),
    // Vector 2: m/0/2147483647H -> m/0/2147483647H/1
    (
        "xpub6ASAVgeehLbnwdqV6UKMHVzgqAG8Gr6riv3Fxxpj8ksbH9ebxaEyBLZ85ySDhKiLDBrQSARLq1uNRts8RuJiHjaDMBU4Zn9h8LZNnBC5y4a",
        1,
        "xpub6DF8uhdarytz3FWdA8TvFSvvAh8dP3283MY7p2V4SeE2wyWmG5mg5EwVvmdMVCQcoNJxGoWaU9DCWh89LojfZ537wTfunKau47EL2dhHKon",
    ),
    // Vector 2: m/0/2147483647H/1/2147483646H -> .../2
    (
        "xpub6ERApfZwUNrhLCkDtcHTcxd75RbzS1ed54G1LkBUHQVHQKqhMkhgbmJbZRkrgZw4koxb5JaHWkY4ALHY2grBGRjaDMzQLcgJvLJuZZvRcEL",
        2,
        "xpub6FnCn6nSzZAw5Tw7cgR9bi15UV96gLZhjDstkXXxvCLsUXBGXPdSnLFbdpq8p9HmGsApME5hQTZ3emM2rnY5agb9rXpVGyy3bdW6EEgAtqt",
    ),
];

#[test]
fn published_public_derivation_vectors() {
    for (parent, index, child) in PUBLIC_DERIVATION_VECTORS {
        let parent_key: ExtendedPublicKey = parent.parse().unwrap();
        assert_eq!(parent_key.to_string(), *parent, "round trip");
        let (derived, tweak) = parent_key.derive_child(*index).unwrap();
        assert_eq!(derived.to_string(), *child, "child {index} of {parent}");
        assert_eq!(derived.depth(), parent_key.depth() + 1);
        assert_eq!(
            derived.public_key().to_projective(),
            parent_key.public_key().to_projective() + ProjectivePoint::mul_by_generator(&tweak)
        );
    }
}

#[test]
fn paths_parse_and_reject_hardened() {
    assert_eq!(
        "m".parse::<DerivationPath>().unwrap(),
        DerivationPath::root()
    );
    let path: DerivationPath = "m/44/60/0/0/5".parse().unwrap();
    assert_eq!(path.indices(), &[44, 60, 0, 0, 5]);
    assert_eq!(path.to_string(), "m/44/60/0/0/5");
    for hardened in ["m/44'", "m/0h", "m/0H/1", "m/2147483648"] {
        assert_eq!(
            hardened.parse::<DerivationPath>().err(),
            Some(Error::HardenedDerivation),
            "{hardened}"
        );
    }
    for bad in [
        "",
        "n/0",
        "m/",
        "m//1",
        "m/-1",
        "m/+5",
        "m/01",
        "m/4294967296",
        "m/x",
    ] {
        assert_eq!(
            bad.parse::<DerivationPath>().err(),
            Some(Error::InvalidDerivationPath),
            "{bad}"
        );
    }
    assert_eq!(
        DerivationPath::from_indices(&[HARDENED]).err(),
        Some(Error::HardenedDerivation)
    );
    let parent: ExtendedPublicKey = PUBLIC_DERIVATION_VECTORS[0].0.parse().unwrap();
    assert_eq!(
        parent.derive_child(HARDENED).err(),
        Some(Error::HardenedDerivation)
    );
}

#[test]
fn bad_xpub_strings_are_rejected() {
    let good = PUBLIC_DERIVATION_VECTORS[0].0;
    let mut flipped: Vec<char> = good.chars().collect();
    flipped[20] = if flipped[20] == 'a' { 'b' } else { 'a' };
    let flipped: String = flipped.into_iter().collect();
    assert_eq!(
        flipped.parse::<ExtendedPublicKey>().err(),
        Some(Error::InvalidExtendedKey)
    );
    assert_eq!(
        "xpub".parse::<ExtendedPublicKey>().err(),
        Some(Error::InvalidExtendedKey)
    );
    assert_eq!(
        "0OIl".parse::<ExtendedPublicKey>().err(),
        Some(Error::InvalidExtendedKey)
    );
    // The right checksum over another version (testnet `tpub`) and a valid
    // public key: still not an xpub.
    let mut raw = good.parse::<ExtendedPublicKey>().unwrap().to_raw();
    raw[..4].copy_from_slice(&[0x04, 0x35, 0x87, 0xcf]);
    let mut with_checksum = raw.to_vec();
    with_checksum.extend_from_slice(&checksum(&raw));
    let tpub = bs58::encode(with_checksum).into_string();
    assert!(tpub.starts_with("tpub"), "{tpub}");
    assert_eq!(
        tpub.parse::<ExtendedPublicKey>().err(),
        Some(Error::InvalidExtendedKey)
    );
    // An xprv is not an xpub.
    let xprv = "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi";
    assert_eq!(
        xprv.parse::<ExtendedPublicKey>().err(),
        Some(Error::InvalidExtendedKey)
    );
}

proptest::proptest! {
    /// A path's encoding (in signing session ids, PROTOCOL.md §14) is each
    /// index as `u32_be`, outermost first: it gives the path back, so two
    /// paths never share an encoding; its depth after derivation is its
    /// length.
    #[test]
    fn path_encoding_gives_the_path_back(indices in proptest::collection::vec(0..HARDENED, 0..6)) {
        let path = DerivationPath::from_indices(&indices).unwrap();
        let decoded: Vec<u32> = path
            .to_bytes()
            .chunks(4)
            .map(|chunk| u32::from_be_bytes(chunk.try_into().unwrap()))
            .collect();
        proptest::prop_assert_eq!(&decoded, &indices);
        let root: ExtendedPublicKey = PUBLIC_DERIVATION_VECTORS[3].0.parse().unwrap();
        proptest::prop_assert_eq!(root.depth(), 0);
        if let Ok((descendant, _)) = root.derive_path(&path) {
            proptest::prop_assert_eq!(usize::from(descendant.depth()), indices.len());
        }
    }
}
