//! Server side of connectionless NTLMv2 (MS-NLMP) as MS-SIPAE uses it: the CHALLENGE
//! message, verification of the AUTHENTICATE message against the user's NT hash, the
//! session keys, and the message signatures exchanged after authentication.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use rc4::{KeyInit, Rc4, StreamCipher};

type HmacMd5 = Hmac<Md5>;

/// Flags of our CHALLENGE: UNICODE, NTLM, ALWAYS_SIGN, EXTENDED_SESSIONSECURITY,
/// TARGET_INFO, SIGN, DATAGRAM, IDENTIFY, KEY_EXCH, 128-bit, VERSION (SIPE refuses
/// a challenge without any of the first nine).
pub const CHALLENGE_FLAGS: u32 = 0xE299_8255;
const KEY_EXCH: u32 = 0x4000_0000;
/// MS-SIPAE uses a fixed sequence number in connectionless mode.
const SEQUENCE: u32 = 100;
/// The VERSION field we send (Windows 6.1.7601, NTLMSSP revision 15).
const VERSION: [u8; 8] = [6, 1, 0xb1, 0x1d, 0, 0, 0, 0x0f];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NtlmError {
    #[error("malformed NTLM message: {0}")]
    Malformed(&'static str),
    #[error("the NTLMv2 response does not match the password")]
    BadResponse,
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <HmacMd5 as Mac>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn rc4(key: &[u8; 16], data: &mut [u8]) {
    let mut cipher = Rc4::<rc4::consts::U16>::new(key.into());
    cipher.apply_keystream(data);
}

/// Builds a CHALLENGE message for `server_challenge`. `domain` and `host` name the
/// server in the target information; `filetime` is the current time in Windows
/// FILETIME units.
pub fn challenge_message(
    server_challenge: &[u8; 8],
    domain: &str,
    host: &str,
    dns_domain: &str,
    filetime: u64,
) -> Vec<u8> {
    let target = utf16(domain);
    let mut info = Vec::new();
    let mut av = |id: u16, value: &[u8]| {
        info.extend_from_slice(&id.to_le_bytes());
        info.extend_from_slice(&(value.len() as u16).to_le_bytes());
        info.extend_from_slice(value);
    };
    av(2, &utf16(domain));
    av(1, &utf16(host));
    av(4, &utf16(dns_domain));
    av(
        3,
        &utf16(&format!("{}.{dns_domain}", host.to_ascii_lowercase())),
    );
    av(7, &filetime.to_le_bytes());
    av(0, &[]);
    const HEADER: usize = 56;
    let mut m = Vec::with_capacity(HEADER + target.len() + info.len());
    m.extend_from_slice(b"NTLMSSP\0");
    m.extend_from_slice(&2u32.to_le_bytes());
    let field = |m: &mut Vec<u8>, len: usize, offset: usize| {
        m.extend_from_slice(&(len as u16).to_le_bytes());
        m.extend_from_slice(&(len as u16).to_le_bytes());
        m.extend_from_slice(&(offset as u32).to_le_bytes());
    };
    field(&mut m, target.len(), HEADER);
    m.extend_from_slice(&CHALLENGE_FLAGS.to_le_bytes());
    m.extend_from_slice(server_challenge);
    m.extend_from_slice(&[0; 8]);
    field(&mut m, info.len(), HEADER + target.len());
    m.extend_from_slice(&VERSION);
    m.extend_from_slice(&target);
    m.extend_from_slice(&info);
    m
}

/// The fields of an AUTHENTICATE message the server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub nt_response: Vec<u8>,
    pub domain: String,
    pub user: String,
    pub encrypted_session_key: Vec<u8>,
    pub flags: u32,
}

fn field(msg: &[u8], at: usize) -> Result<&[u8], NtlmError> {
    let head = msg
        .get(at..at + 8)
        .ok_or(NtlmError::Malformed("truncated header"))?;
    let len = u16::from_le_bytes([head[0], head[1]]) as usize;
    let offset = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    msg.get(offset..offset + len)
        .ok_or(NtlmError::Malformed("field outside the message"))
}

fn utf16_string(bytes: &[u8]) -> Result<String, NtlmError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(NtlmError::Malformed("odd UTF-16 length"));
    }
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| NtlmError::Malformed("bad UTF-16"))
}

pub fn parse_authenticate(msg: &[u8]) -> Result<Authenticate, NtlmError> {
    if msg.len() < 64 || &msg[..8] != b"NTLMSSP\0" || msg[8..12] != 3u32.to_le_bytes() {
        return Err(NtlmError::Malformed("not an AUTHENTICATE message"));
    }
    let flags = u32::from_le_bytes([msg[60], msg[61], msg[62], msg[63]]);
    Ok(Authenticate {
        nt_response: field(msg, 20)?.to_vec(),
        domain: utf16_string(field(msg, 28)?)?,
        user: utf16_string(field(msg, 36)?)?,
        encrypted_session_key: field(msg, 52)?.to_vec(),
        flags,
    })
}

/// Signing and sealing keys of both directions.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub client_sign: [u8; 16],
    pub client_seal: [u8; 16],
    pub server_sign: [u8; 16],
    pub server_seal: [u8; 16],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(***)")
    }
}

fn derive(exported: &[u8; 16], magic: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(exported);
    h.update(magic);
    h.finalize().into()
}

/// Checks the NTLMv2 response against the user's NT hash and derives the session
/// keys (MS-NLMP 3.3.2, 3.4.5).
pub fn verify(
    auth: &Authenticate,
    nt_hash: &[u8; 16],
    server_challenge: &[u8; 8],
) -> Result<Keys, NtlmError> {
    if auth.nt_response.len() < 48 {
        return Err(NtlmError::Malformed("not an NTLMv2 response"));
    }
    let identity = utf16(&(auth.user.to_uppercase() + &auth.domain));
    let ntowf = hmac_md5(nt_hash, &[&identity]);
    let (proof, blob) = auth.nt_response.split_at(16);
    let expected = hmac_md5(&ntowf, &[server_challenge, blob]);
    // Constant-time comparison: no early exit on the first differing byte.
    if expected
        .iter()
        .zip(proof)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        != 0
    {
        return Err(NtlmError::BadResponse);
    }
    let session_base = hmac_md5(&ntowf, &[proof]);
    let mut exported = session_base;
    if auth.flags & KEY_EXCH != 0 {
        let mut key: [u8; 16] = auth
            .encrypted_session_key
            .as_slice()
            .try_into()
            .map_err(|_| NtlmError::Malformed("session key is not 16 bytes"))?;
        rc4(&session_base, &mut key);
        exported = key;
    }
    Ok(Keys {
        client_sign: derive(
            &exported,
            b"session key to client-to-server signing key magic constant\0",
        ),
        client_seal: derive(
            &exported,
            b"session key to client-to-server sealing key magic constant\0",
        ),
        server_sign: derive(
            &exported,
            b"session key to server-to-client signing key magic constant\0",
        ),
        server_seal: derive(
            &exported,
            b"session key to server-to-client sealing key magic constant\0",
        ),
    })
}

/// The MS-SIPAE signature of `text` (hex, upper case, as in `response=`/`rspauth=`).
pub fn signature(sign_key: &[u8; 16], seal_key: &[u8; 16], text: &str) -> String {
    let seq = SEQUENCE.to_le_bytes();
    let mac = hmac_md5(sign_key, &[&seq, text.as_bytes()]);
    let mut checksum: [u8; 8] = mac[..8].try_into().expect("8 bytes");
    let mut h = Md5::new();
    h.update(seal_key);
    h.update(seq);
    let handle: [u8; 16] = h.finalize().into();
    rc4(&handle, &mut checksum);
    let mut out = String::with_capacity(32);
    for b in [1u8, 0, 0, 0].iter().chain(&checksum).chain(&seq) {
        out.push_str(&format!("{b:02X}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_layout() {
        let m = challenge_message(
            &[1, 2, 3, 4, 5, 6, 7, 8],
            "EXAMPLE",
            "OCS",
            "example.local",
            0,
        );
        assert_eq!(&m[..8], b"NTLMSSP\0");
        assert_eq!(
            u32::from_le_bytes(m[20..24].try_into().unwrap()),
            CHALLENGE_FLAGS
        );
        assert_eq!(&m[24..32], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(field(&m, 12).unwrap(), utf16("EXAMPLE").as_slice());
        let info = field(&m, 40).unwrap();
        assert_eq!(&info[info.len() - 4..], &[0, 0, 0, 0], "ends with MsvAvEOL");
    }

    /// The captured SIPE session: its CHALLENGE, AUTHENTICATE and signatures are test
    /// vectors (password `secret`).
    const SESSION: &str = include_str!("../tests/fixtures/sipe-session-ntlm.txt");

    fn gssapi(line_start: &str) -> Vec<u8> {
        use base64::Engine as _;
        let line = SESSION
            .lines()
            .find(|l| l.starts_with(line_start) && l.contains("gssapi-data=\"TlRM"))
            .unwrap();
        let b64 = line
            .split("gssapi-data=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn verifies_a_real_sipe_authentication_and_its_signatures() {
        let challenge = gssapi("WWW-Authenticate: NTLM opaque=\"D76B55BF\"");
        let server_challenge: [u8; 8] = challenge[24..32].try_into().unwrap();
        let auth = parse_authenticate(&gssapi(
            "Authorization: NTLM qop=\"auth\", opaque=\"D76B55BF\"",
        ))
        .unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.domain.as_str(), auth.flags),
            ("alice@example.com", "", 0x6298_8255)
        );
        let keys = verify(&auth, &accounts::nt_hash("secret"), &server_challenge).unwrap();
        // The client's signature of its final REGISTER.
        let register = "<NTLM><4db38a73><1><SIP Communications Service><ocs.example.com><CBBCg261DaE99Ai72B3m3E47t3F6Ab62C0xE8F8x><3><REGISTER><sip:alice@example.com><4149011501><sip:alice@example.com><><><><>";
        assert_eq!(
            signature(&keys.client_sign, &keys.client_seal, register),
            "010000001C33110DE68E323E64000000"
        );
        // The server's signature of its 200 to that REGISTER, which SIPE accepted.
        let ok = "<NTLM><347a3233><1><SIP Communications Service><ocs.example.com><CBBCg261DaE99Ai72B3m3E47t3F6Ab62C0xE8F8x><3><REGISTER><sip:alice@example.com><4149011501><sip:alice@example.com><a4a89dc7><><><3600><200>";
        assert_eq!(
            signature(&keys.server_sign, &keys.server_seal, ok),
            "0100000021655F5790A9BCF964000000"
        );
        assert_eq!(
            verify(&auth, &accounts::nt_hash("wrong"), &server_challenge),
            Err(NtlmError::BadResponse)
        );
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_authenticate(b"NTLMSSP\0").is_err());
        let mut m = vec![0u8; 64];
        m[..8].copy_from_slice(b"NTLMSSP\0");
        m[8] = 3;
        m[20..28].copy_from_slice(&[200, 0, 200, 0, 0, 1, 0, 0]);
        assert_eq!(
            parse_authenticate(&m),
            Err(NtlmError::Malformed("field outside the message"))
        );
    }
}
