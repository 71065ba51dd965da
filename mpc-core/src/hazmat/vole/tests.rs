use super::*;
use crate::hazmat::ot::setup::tests::key_pair;
use crate::AbortClass;
use k256::elliptic_curve::Field;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn run(
    seed: u64,
    inputs: [Scalar; RVOLE_INPUTS],
    deviation: Option<SenderDeviation>,
) -> (
    Result<RvoleReceiverOutput>,
    RvoleSenderOutput,
    [u8; CHOICE_BYTES],
) {
    let (sender_key, receiver_key) = key_pair(seed);
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0xff);
    let sid = [seed as u8; 32];
    let (receiver, ote_msg) = RvoleReceiver::start(&mut rng, &receiver_key, &sid);
    let choices = *receiver.choices();
    let (c, vole_msg) =
        send_inner(&mut rng, &sender_key, &sid, &ote_msg, &inputs, deviation).unwrap();
    assert_eq!(vole_msg.len(), VOLE_MSG_BYTES);
    (receiver.finish(&receiver_key, &vole_msg), c, choices)
}

fn random_inputs(rng: &mut ChaCha20Rng) -> [Scalar; RVOLE_INPUTS] {
    core::array::from_fn(|_| Scalar::random(&mut *rng))
}

#[test]
fn outputs_are_shares_of_products() {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let cases = [
        random_inputs(&mut rng),
        random_inputs(&mut rng),
        [Scalar::ZERO, -Scalar::ONE],
    ];
    for (n, inputs) in cases.into_iter().enumerate() {
        let (d, c, _) = run(n as u64 + 1, inputs, None);
        let d = d.unwrap();
        for i in 0..RVOLE_INPUTS {
            assert_eq!(c.c[i] + d.d[i], inputs[i] * d.chi);
        }
    }
}

#[test]
fn many_random_sessions_multiply_correctly() {
    // One key pair (setup is the slow part), many sessions with fresh
    // inputs, in both directions of use of the same keys.
    let (sender_key, receiver_key) = key_pair(21);
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let mut chis = Vec::new();
    for session in 0..64u64 {
        let mut sid = [0u8; 32];
        sid[..8].copy_from_slice(&session.to_be_bytes());
        let inputs = random_inputs(&mut rng);
        let (receiver, ote_msg) = RvoleReceiver::start(&mut rng, &receiver_key, &sid);
        let (c, vole_msg) = send(&mut rng, &sender_key, &sid, &ote_msg, &inputs).unwrap();
        let d = receiver.finish(&receiver_key, &vole_msg).unwrap();
        for i in 0..RVOLE_INPUTS {
            assert_eq!(c.c[i] + d.d[i], inputs[i] * d.chi);
        }
        chis.push(d.chi);
    }
    chis.sort_by_key(|chi| chi.to_bytes());
    chis.dedup();
    assert_eq!(chis.len(), 64);
}

/// The derivation with its shared prefix absorbed once gives exactly the
/// spec's `g_j = H2S(mpc/vole/gadget/v1; keyctx, u32(j))` (PROTOCOL.md §7).
#[test]
fn gadget_entries_are_the_spec_hashes() {
    for keyctx in [[0u8; 32], [0xa5; 32], core::array::from_fn(|i| i as u8)] {
        let gadget = Gadget::derive(&keyctx);
        assert_eq!(gadget.entries().len(), XI);
        for (j, entry) in gadget.entries().iter().enumerate() {
            let index = u32::try_from(j).unwrap().to_be_bytes();
            let spec = hash_to_scalar(tags::VOLE_GADGET, &[&keyctx, &index]);
            assert_eq!(*entry, spec, "entry {j}");
        }
    }
}

#[test]
fn chi_is_gadget_inner_product() {
    let (_, receiver_key) = key_pair(3);
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let (receiver, _) = RvoleReceiver::start(&mut rng, &receiver_key, &[0; 32]);
    let expected = receiver_key
        .gadget()
        .entries()
        .iter()
        .enumerate()
        .filter(|(j, _)| (receiver.choices()[j / 8] >> (j % 8)) & 1 == 1)
        .fold(Scalar::ZERO, |acc, (_, g)| acc + g);
    assert_eq!(*receiver.chi(), expected);
    assert!(!bool::from(expected.is_zero()));
}

#[test]
fn tampered_a_tilde_is_banned_iff_choice_bit_set() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let inputs = random_inputs(&mut rng);
    // Learn the choice bits of this seed's run, then tamper one row whose
    // bit is 1 and one whose bit is 0.
    let (_, _, choices) = run(6, inputs, None);
    let bit = |j: usize| (choices[j / 8] >> (j % 8)) & 1;
    let one = (0..XI).find(|j| bit(*j) == 1).unwrap();
    let zero = (0..XI).find(|j| bit(*j) == 0).unwrap();
    let delta = Scalar::from(7u64);
    for col in 0..RVOLE_WIDTH {
        let (result, _, _) = run(
            6,
            inputs,
            Some(SenderDeviation::ATilde {
                row: one,
                col,
                delta,
            }),
        );
        let err = result.err().unwrap();
        assert_eq!(err, Error::RvoleCheckFailed);
        assert_eq!(err.class(), AbortClass::Ban);
        // beta_j = 0: R never looks at a_tilde[j]; the tamper has no effect
        // on R's view, so the check passes (and R's output is unchanged).
        let (result, _, _) = run(
            6,
            inputs,
            Some(SenderDeviation::ATilde {
                row: zero,
                col,
                delta,
            }),
        );
        assert!(result.is_ok());
    }
}

#[test]
fn tampered_eta_or_mu_is_banned() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let inputs = random_inputs(&mut rng);
    let (result, _, _) = run(8, inputs, Some(SenderDeviation::Eta { delta: Scalar::ONE }));
    assert_eq!(result.err(), Some(Error::RvoleCheckFailed));
    let (result, _, _) = run(8, inputs, Some(SenderDeviation::Mu));
    assert_eq!(result.err(), Some(Error::RvoleCheckFailed));
}

#[test]
fn consistent_input_shift_is_an_input_substitution() {
    // Shifting column 0 of every row and fixing eta passes: the result is
    // the RVOLE of (a_0 + delta, a_1), which the signing protocol's Gamma
    // checks catch (PROTOCOL.md §7.4).
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let inputs = random_inputs(&mut rng);
    let delta = Scalar::from(1234u64);
    let (d, c, _) = run(10, inputs, Some(SenderDeviation::ShiftInput { delta }));
    let d = d.unwrap();
    assert_eq!(c.c[0] + d.d[0], (inputs[0] + delta) * d.chi);
    assert_eq!(c.c[1] + d.d[1], inputs[1] * d.chi);
}

#[test]
fn malformed_message_aborts_without_ban() {
    let (sender_key, receiver_key) = key_pair(11);
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let sid = [1; 32];
    let inputs = random_inputs(&mut rng);
    let (receiver, ote_msg) = RvoleReceiver::start(&mut rng, &receiver_key, &sid);
    let (_, mut vole_msg) = send(&mut rng, &sender_key, &sid, &ote_msg, &inputs).unwrap();
    assert_eq!(
        RvoleReceiver::start(&mut rng, &receiver_key, &sid)
            .0
            .finish(&receiver_key, &vole_msg[1..])
            .err(),
        Some(Error::WrongLength)
    );
    // a_tilde[0][0] = 2^256 - 1 >= q.
    vole_msg[..32].fill(0xff);
    let err = receiver.finish(&receiver_key, &vole_msg).err().unwrap();
    assert_eq!(err, Error::NonCanonicalScalar);
    assert_eq!(err.class(), AbortClass::Abort);
}

#[test]
fn wrong_session_is_caught_by_the_extension_check() {
    let (sender_key, receiver_key) = key_pair(13);
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let inputs = random_inputs(&mut rng);
    let (_, ote_msg) = RvoleReceiver::start(&mut rng, &receiver_key, &[1; 32]);
    assert_eq!(
        send(&mut rng, &sender_key, &[2; 32], &ote_msg, &inputs).err(),
        Some(Error::OtExtensionCheckFailed)
    );
}

#[test]
fn check_indices_are_the_corrected_ones() {
    // The honest identity mu'[j][k] = mu[j][k] needs theta[i][k]; the
    // printed typo theta[k][k] breaks it for honest parties (PROTOCOL.md
    // §7.3). Checked on real extension outputs.
    let (sender_key, receiver_key) = key_pair(15);
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let sid_ext = [5u8; 32];
    let choices = [0xc3u8; CHOICE_BYTES];
    let (ote_msg, r_out) = extension::receive(&mut rng, receiver_key.seeds(), &sid_ext, &choices);
    let s_out = extension::send(sender_key.seeds(), &sid_ext, &ote_msg).unwrap();
    let inputs = random_inputs(&mut rng);
    let a_hat = Scalar::random(&mut rng);
    let theta: [[Scalar; RVOLE_CHECKS]; RVOLE_INPUTS] =
        [[Scalar::from(3u64)], [Scalar::from(5u64)]];
    let eta = a_hat + theta[0][0] * inputs[0] + theta[1][0] * inputs[1];
    let mut typo_breaks = false;
    for j in 0..XI {
        let [alpha0, alpha1] = &s_out.outputs[j];
        let pads = [inputs[0], inputs[1], a_hat];
        let beta = (choices[j / 8] >> (j % 8)) & 1 == 1;
        let d_tilde: [Scalar; RVOLE_WIDTH] = core::array::from_fn(|t| {
            let a_tilde = alpha0[t] - alpha1[t] + pads[t];
            r_out.outputs[j][t] + if beta { a_tilde } else { Scalar::ZERO }
        });
        let beta_eta = |e: Scalar| if beta { e } else { Scalar::ZERO };
        let mu = check_combination(alpha0, &theta)[0];
        let mu_prime = check_combination(&d_tilde, &theta)[0] - beta_eta(eta);
        assert_eq!(mu, mu_prime);
        let typo = |v: &RotOutput| v[2] + theta[0][0] * v[0] + theta[0][0] * v[1];
        typo_breaks |= typo(alpha0) != typo(&d_tilde) - beta_eta(eta);
    }
    assert!(typo_breaks);
}

#[test]
fn eta_is_masked_by_fresh_sender_randomness() {
    // `eta = a_hat + sum theta_i * input_i`: without the fresh pad `a_hat`
    // (or with a pad that repeats), `eta` is a public linear function of the
    // sender's inputs, and in signing those inputs include the sender's key
    // share (PROTOCOL.md §7.2). Same keys, session, receiver message and
    // inputs twice; only the sender's randomness differs.
    let (sender_key, receiver_key) = key_pair(31);
    let mut rng = ChaCha20Rng::seed_from_u64(32);
    let sid = [7u8; 32];
    let inputs = random_inputs(&mut rng);
    let (_receiver, ote_msg) = RvoleReceiver::start(&mut rng, &receiver_key, &sid);
    let sid_ext = extension_sid(&sender_key.context().keyctx, &sid);
    let ctx = BatchContext::new(&sid_ext, &ote_msg);
    let a_tilde_len = XI * RVOLE_WIDTH * SCALAR_BYTES;
    let mut masks = Vec::new();
    for seed in [33u64, 34] {
        let mut sender_rng = ChaCha20Rng::seed_from_u64(seed);
        let (_, message) = send(&mut sender_rng, &sender_key, &sid, &ote_msg, &inputs).unwrap();
        let theta = ctx.theta(&message[..a_tilde_len]);
        for k in 0..RVOLE_CHECKS {
            let at = a_tilde_len + k * SCALAR_BYTES;
            let eta = decode_scalar(&message[at..at + SCALAR_BYTES]).unwrap();
            let mask = (0..RVOLE_INPUTS).fold(eta, |acc, i| acc - theta[i][k] * inputs[i]);
            assert_ne!(mask, Scalar::ZERO, "eta reveals the inputs");
            masks.push(mask);
        }
    }
    assert_ne!(
        masks[..RVOLE_CHECKS],
        masks[RVOLE_CHECKS..],
        "the pad repeats"
    );
}
