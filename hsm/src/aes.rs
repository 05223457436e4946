//! Streaming AES: CBC with PKCS#7 padding and GCM, on the host (AES-NI through aws-lc-rs).
//! The token's version of the same interface is in `pkcs11.rs`.
//!
//! GCM on the host is built from AES-CTR (aws-lc-rs, streaming) and GHASH (RustCrypto `ghash`,
//! constant-time carry-less multiplication), because no maintained crate offers streaming GCM.
//! Only 96-bit nonces are accepted (RFC 5084 recommends them; OpenSSL, NSS and Outlook use them):
//! the CTR counter then cannot wrap within the 2^32-block limit of GCM.

use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, DecryptionContext, EncryptionContext, StreamingDecryptingKey,
    StreamingEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// The AES mode and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AesMode {
    /// CBC with PKCS#7 padding (CMS EnvelopedData).
    Cbc { iv: [u8; 16] },
    /// GCM (CMS AuthEnvelopedData): 12-byte nonce, additional data, tag length in bytes (12..=16).
    Gcm {
        nonce: Vec<u8>,
        aad: Vec<u8>,
        tag_len: usize,
    },
    /// Triple-DES (3-key EDE) CBC with PKCS#7 padding: decryption only, on the host only, for
    /// mail that old clients encrypted. Needs a 24-byte key placed on the host.
    LegacyDes3Cbc { iv: [u8; 8] },
}

impl AesMode {
    pub(crate) fn check(&self) -> Result<()> {
        if let AesMode::Gcm { nonce, tag_len, .. } = self {
            if nonce.len() != 12 {
                return Err(Error::Unsupported(format!(
                    "AES-GCM with a {}-byte nonce (only 12-byte nonces are accepted)",
                    nonce.len()
                )));
            }
            if !(12..=16).contains(tag_len) {
                return Err(Error::Invalid(format!("AES-GCM tag length {tag_len}")));
            }
        }
        Ok(())
    }
}

/// Encrypt or decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherDirection {
    Encrypt,
    Decrypt,
}

/// A streaming AES operation.
///
/// For GCM decryption, output from `update` is not yet authenticated: callers must hold it back
/// (spool it) until `finish` has verified the tag.
pub trait CipherStream: Send {
    /// Feeds `input`; appends whatever output is ready to `out`.
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()>;

    /// Ends the operation, appending the last output. GCM encryption returns the tag; GCM
    /// decryption needs `tag` and fails with [`Error::Decrypt`] when it does not match. CBC
    /// decryption fails with [`Error::Decrypt`] on bad padding.
    fn finish(self: Box<Self>, tag: Option<&[u8]>, out: &mut Vec<u8>) -> Result<Option<Vec<u8>>>;
}

fn unbound(key: &[u8]) -> Result<UnboundCipherKey> {
    let alg = match key.len() {
        16 => &AES_128,
        24 => &AES_192,
        32 => &AES_256,
        n => return Err(Error::Invalid(format!("AES key of {n} bytes"))),
    };
    UnboundCipherKey::new(alg, key).map_err(|_| Error::Crypto("AES key setup"))
}

pub(crate) fn host_cipher(
    key: &[u8],
    dir: CipherDirection,
    mode: &AesMode,
) -> Result<Box<dyn CipherStream>> {
    mode.check()?;
    match (mode, dir) {
        (AesMode::Cbc { iv }, CipherDirection::Encrypt) => {
            let k = StreamingEncryptingKey::less_safe_cbc_pkcs7(
                unbound(key)?,
                EncryptionContext::Iv128(FixedLength::from(*iv)),
            )
            .map_err(|_| Error::Crypto("AES-CBC setup"))?;
            Ok(Box::new(HostCbcEnc(k)))
        }
        (AesMode::Cbc { iv }, CipherDirection::Decrypt) => {
            let k = StreamingDecryptingKey::cbc_pkcs7(
                unbound(key)?,
                DecryptionContext::Iv128(FixedLength::from(*iv)),
            )
            .map_err(|_| Error::Crypto("AES-CBC setup"))?;
            Ok(Box::new(HostCbcDec(k)))
        }
        (
            AesMode::Gcm {
                nonce,
                aad,
                tag_len,
            },
            dir,
        ) => Ok(Box::new(HostGcm::new(key, nonce, aad, *tag_len, dir)?)),
        (AesMode::LegacyDes3Cbc { iv }, CipherDirection::Decrypt) => {
            use des::cipher::KeyInit;
            let cipher = des::TdesEde3::new_from_slice(key).map_err(|_| {
                Error::Invalid(format!("a triple-DES key is 24 bytes, not {}", key.len()))
            })?;
            Ok(Box::new(HostDes3Dec {
                cipher,
                previous: *iv,
                pending: Vec::new(),
            }))
        }
        (AesMode::LegacyDes3Cbc { .. }, CipherDirection::Encrypt) => Err(Error::Unsupported(
            "triple-DES encryption (it is only decrypted, for old mail)".into(),
        )),
    }
}

/// CBC decryption over 3DES, holding back the last block for the padding check.
struct HostDes3Dec {
    cipher: des::TdesEde3,
    previous: [u8; 8],
    pending: Vec<u8>,
}

impl HostDes3Dec {
    fn decrypt_blocks(&mut self, data: &[u8], out: &mut Vec<u8>) {
        use des::cipher::BlockCipherDecrypt;
        for chunk in data.chunks_exact(8) {
            let mut block = des::cipher::Block::<des::TdesEde3>::default();
            block.copy_from_slice(chunk);
            self.cipher.decrypt_block(&mut block);
            out.extend(block.iter().zip(self.previous).map(|(b, p)| b ^ p));
            self.previous.copy_from_slice(chunk);
        }
    }
}

impl CipherStream for HostDes3Dec {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.pending.extend_from_slice(input);
        // Keep at least one whole block back: it may be the padded last one.
        let ready = self.pending.len().saturating_sub(1) / 8 * 8;
        if ready > 0 {
            let data: Vec<u8> = self.pending.drain(..ready).collect();
            self.decrypt_blocks(&data, out);
        }
        Ok(())
    }

    fn finish(
        mut self: Box<Self>,
        _tag: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Vec<u8>>> {
        if self.pending.len() != 8 {
            return Err(Error::Decrypt);
        }
        let last = std::mem::take(&mut self.pending);
        let mut block = Vec::with_capacity(8);
        self.decrypt_blocks(&last, &mut block);
        let pad = usize::from(block[7]);
        let padding_ok =
            (1..=8).contains(&pad) && block[8 - pad..].iter().all(|b| usize::from(*b) == pad);
        if !padding_ok {
            return Err(Error::Decrypt);
        }
        out.extend_from_slice(&block[..8 - pad]);
        Ok(None)
    }
}

struct HostCbcEnc(StreamingEncryptingKey);
struct HostCbcDec(StreamingDecryptingKey);

fn grow(out: &mut Vec<u8>, n: usize) -> usize {
    let start = out.len();
    out.resize(start + n, 0);
    start
}

impl CipherStream for HostCbcEnc {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = grow(out, input.len() + 16);
        let n = self
            .0
            .update(input, &mut out[start..])
            .map_err(|_| Error::Crypto("AES-CBC encrypt"))?
            .written()
            .len();
        out.truncate(start + n);
        Ok(())
    }

    fn finish(self: Box<Self>, _tag: Option<&[u8]>, out: &mut Vec<u8>) -> Result<Option<Vec<u8>>> {
        let start = grow(out, 16);
        let (_, upd) = self
            .0
            .finish(&mut out[start..])
            .map_err(|_| Error::Crypto("AES-CBC encrypt"))?;
        let n = upd.written().len();
        out.truncate(start + n);
        Ok(None)
    }
}

impl CipherStream for HostCbcDec {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = grow(out, input.len() + 16);
        let n = self
            .0
            .update(input, &mut out[start..])
            .map_err(|_| Error::Decrypt)?
            .written()
            .len();
        out.truncate(start + n);
        Ok(())
    }

    fn finish(self: Box<Self>, _tag: Option<&[u8]>, out: &mut Vec<u8>) -> Result<Option<Vec<u8>>> {
        let start = grow(out, 16);
        let n = self
            .0
            .finish(&mut out[start..])
            .map_err(|_| Error::Decrypt)?
            .written()
            .len();
        out.truncate(start + n);
        Ok(None)
    }
}

/// GCM = CTR from inc32(J0) + GHASH over AAD and ciphertext, tag = GHASH ^ E(K, J0).
struct HostGcm {
    ctr: StreamingEncryptingKey,
    ghash: GHash,
    /// Ciphertext bytes not yet a full GHASH block.
    pending: Vec<u8>,
    aad_len: u64,
    ct_len: u64,
    ek_j0: [u8; 16],
    tag_len: usize,
    dir: CipherDirection,
}

impl HostGcm {
    fn new(
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        tag_len: usize,
        dir: CipherDirection,
    ) -> Result<Self> {
        let mut j0 = [0u8; 16];
        j0[..12].copy_from_slice(nonce);
        j0[15] = 1;
        // E(K, 0) and E(K, J0): one-block CTR runs over zeros.
        let h = ecb_block(key, [0u8; 16])?;
        let ek_j0 = ecb_block(key, j0)?;
        let mut ctr0 = j0;
        ctr0[15] = 2;
        let ctr = StreamingEncryptingKey::less_safe_ctr(
            unbound(key)?,
            EncryptionContext::Iv128(FixedLength::from(ctr0)),
        )
        .map_err(|_| Error::Crypto("AES-CTR setup"))?;
        let mut ghash = GHash::new(&h.into());
        ghash.update_padded(aad);
        Ok(HostGcm {
            ctr,
            ghash,
            pending: Vec::with_capacity(16),
            aad_len: aad.len() as u64,
            ct_len: 0,
            ek_j0,
            tag_len,
            dir,
        })
    }

    fn absorb(&mut self, ct: &[u8]) {
        self.ct_len += ct.len() as u64;
        let mut ct = ct;
        if !self.pending.is_empty() {
            let take = (16 - self.pending.len()).min(ct.len());
            self.pending.extend_from_slice(&ct[..take]);
            ct = &ct[take..];
            if self.pending.len() == 16 {
                self.ghash.update_padded(&self.pending);
                self.pending.clear();
            }
        }
        let full = ct.len() / 16 * 16;
        if full > 0 {
            self.ghash.update_padded(&ct[..full]);
        }
        self.pending.extend_from_slice(&ct[full..]);
    }
}

fn ecb_block(key: &[u8], block: [u8; 16]) -> Result<[u8; 16]> {
    let k = StreamingEncryptingKey::less_safe_ctr(
        unbound(key)?,
        EncryptionContext::Iv128(FixedLength::from(block)),
    )
    .map_err(|_| Error::Crypto("AES setup"))?;
    let mut k = k;
    let mut out = [0u8; 32];
    let n = k
        .update(&[0u8; 16], &mut out)
        .map_err(|_| Error::Crypto("AES block"))?
        .written()
        .len();
    if n != 16 {
        return Err(Error::Crypto("AES block"));
    }
    let mut r = [0u8; 16];
    r.copy_from_slice(&out[..16]);
    Ok(r)
}

impl CipherStream for HostGcm {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.dir == CipherDirection::Decrypt {
            self.absorb(input);
        }
        let start = grow(out, input.len() + 16);
        let n = self
            .ctr
            .update(input, &mut out[start..])
            .map_err(|_| Error::Crypto("AES-CTR"))?
            .written()
            .len();
        out.truncate(start + n);
        if self.dir == CipherDirection::Encrypt {
            let ct = out[start..].to_vec();
            self.absorb(&ct);
        }
        Ok(())
    }

    fn finish(
        mut self: Box<Self>,
        tag: Option<&[u8]>,
        _out: &mut Vec<u8>,
    ) -> Result<Option<Vec<u8>>> {
        if !self.pending.is_empty() {
            let p = std::mem::take(&mut self.pending);
            self.ghash.update_padded(&p);
        }
        let mut lens = [0u8; 16];
        lens[..8].copy_from_slice(&(self.aad_len * 8).to_be_bytes());
        lens[8..].copy_from_slice(&(self.ct_len * 8).to_be_bytes());
        let HostGcm {
            ghash,
            ek_j0,
            tag_len,
            dir,
            ..
        } = *self;
        let mut ghash = ghash;
        ghash.update_padded(&lens);
        let s = ghash.finalize();
        let full: Vec<u8> = s.iter().zip(ek_j0.iter()).map(|(a, b)| a ^ b).collect();
        let computed = &full[..tag_len];
        match dir {
            CipherDirection::Encrypt => Ok(Some(computed.to_vec())),
            CipherDirection::Decrypt => {
                let given = tag.ok_or(Error::Invalid("AES-GCM decryption needs the tag".into()))?;
                if given.len() == tag_len && bool::from(given.ct_eq(computed)) {
                    Ok(None)
                } else {
                    Err(Error::Decrypt)
                }
            }
        }
    }
}

/// Runs a whole buffer through a stream (tests, self-test, small inputs).
pub fn run_all(
    mut c: Box<dyn CipherStream>,
    input: &[u8],
    tag: Option<&[u8]>,
) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let mut out = Vec::with_capacity(input.len() + 32);
    // Feed in uneven pieces so block boundaries are exercised.
    for chunk in input.chunks(4093) {
        c.update(chunk, &mut out)?;
    }
    let t = c.finish(tag, &mut out)?;
    Ok((out, t))
}

/// AES key unwrap (RFC 3394) on the host: the content key that CMS key agreement wraps under
/// the key derived from the shared secret. A wrong key or damaged data is [`Error::Decrypt`].
pub fn key_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use aws_lc_rs::key_wrap::{AES_128, AES_256, AesKek, KeyWrap};
    let cipher = match kek.len() {
        16 => &AES_128,
        32 => &AES_256,
        n => {
            return Err(Error::Unsupported(format!(
                "AES key wrap with a {}-bit key",
                n * 8
            )));
        }
    };
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(Error::Decrypt);
    }
    let kek = AesKek::new(cipher, kek).map_err(|_| Error::Crypto("AES key wrap setup"))?;
    let mut out = zeroize::Zeroizing::new(vec![0u8; wrapped.len()]);
    let n = kek
        .unwrap(wrapped, &mut out)
        .map_err(|_| Error::Decrypt)?
        .len();
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

    fn reference_gcm(key: &[u8], nonce: [u8; 12], aad: &[u8], pt: &[u8]) -> Vec<u8> {
        let alg = if key.len() == 16 {
            &AES_128_GCM
        } else {
            &AES_256_GCM
        };
        let k = LessSafeKey::new(UnboundKey::new(alg, key).unwrap());
        let mut buf = pt.to_vec();
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .unwrap();
        buf
    }

    #[test]
    fn gcm_matches_aws_lc_one_shot_at_every_length() {
        for key in [[7u8; 16].to_vec(), [9u8; 32].to_vec()] {
            for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100, 4093, 4096, 10_000] {
                let pt: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                let nonce = [3u8; 12];
                let aad = b"header";
                let want = reference_gcm(&key, nonce, aad, &pt);
                let mode = AesMode::Gcm {
                    nonce: nonce.to_vec(),
                    aad: aad.to_vec(),
                    tag_len: 16,
                };
                let enc = host_cipher(&key, CipherDirection::Encrypt, &mode).unwrap();
                let (ct, tag) = run_all(enc, &pt, None).unwrap();
                let tag = tag.unwrap();
                assert_eq!([ct.clone(), tag.clone()].concat(), want, "len {len}");
                let dec = host_cipher(&key, CipherDirection::Decrypt, &mode).unwrap();
                let (back, _) = run_all(dec, &ct, Some(&tag)).unwrap();
                assert_eq!(back, pt);
                let mut bad = tag.clone();
                bad[0] ^= 1;
                let dec = host_cipher(&key, CipherDirection::Decrypt, &mode).unwrap();
                assert!(matches!(run_all(dec, &ct, Some(&bad)), Err(Error::Decrypt)));
            }
        }
    }

    #[test]
    fn cbc_round_trips_and_rejects_bad_padding() {
        let key = [5u8; 32];
        let mode = AesMode::Cbc { iv: [1u8; 16] };
        for len in [0usize, 1, 16, 17, 5000] {
            let pt = vec![0x41u8; len];
            let (ct, _) = run_all(
                host_cipher(&key, CipherDirection::Encrypt, &mode).unwrap(),
                &pt,
                None,
            )
            .unwrap();
            assert_eq!(ct.len(), (len / 16 + 1) * 16);
            let (back, _) = run_all(
                host_cipher(&key, CipherDirection::Decrypt, &mode).unwrap(),
                &ct,
                None,
            )
            .unwrap();
            assert_eq!(back, pt);
        }
        let (ct, _) = run_all(
            host_cipher(&key, CipherDirection::Encrypt, &mode).unwrap(),
            b"hello",
            None,
        )
        .unwrap();
        let wrong = [6u8; 32];
        let r = run_all(
            host_cipher(&wrong, CipherDirection::Decrypt, &mode).unwrap(),
            &ct,
            None,
        );
        assert!(matches!(r, Err(Error::Decrypt)), "{r:?}");
    }

    #[test]
    fn odd_nonces_are_refused() {
        let mode = AesMode::Gcm {
            nonce: vec![0; 8],
            aad: vec![],
            tag_len: 16,
        };
        assert!(host_cipher(&[0; 16], CipherDirection::Encrypt, &mode).is_err());
    }
}
