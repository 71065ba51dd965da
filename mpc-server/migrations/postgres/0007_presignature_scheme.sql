-- Which signature scheme a presignature is for (PROTOCOL.md §20.5): 'ecdsa'
-- (DKLs23 rounds 1-3, §14.3) or 'bip340' (the BIP340 nonce round). Every
-- claim names the scheme it wants, so an ECDSA presignature is never found
-- by a Schnorr online step or the reverse; the sealed record's associated
-- data names the kind too (a second, independent check). Existing rows are
-- ECDSA, the only kind before this migration; every INSERT names the scheme.

ALTER TABLE presignatures ADD COLUMN scheme TEXT NOT NULL DEFAULT 'ecdsa'
    CHECK (scheme IN ('ecdsa', 'bip340'));
