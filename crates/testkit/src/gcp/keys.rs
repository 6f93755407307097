//! The fixed RSA test keys of the fake Google Cloud and the key files (service-account JSON) it
//! hands out and accepts.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

/// The fake's own service-account key (the bot's credentials in tests). A fixed 2048-bit RSA test key,
/// generated once for this file and used nowhere else: generating keys at test time is slow in debug.
pub const TEST_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDicEtSyZxluMon\n\
SNxDnXSA3zwkJWfzPvfqG7swrb2/dkIGMS8zgg13D+H+pQxqwIHTz+01DFuLZhsF\n\
FreRsyo4aF5if0XFeTEkyyMDVsmrCbKZ3dBIE8zTwf6ORNpXWt2Lfjf2v0bIpZxr\n\
jI7t6BFgYvvZu2j3bAWmmD2Q+C1QR9yUIfckZ/h3jbrtYoqggdpSmlTOfiNkR9Jh\n\
mMqpYGg7jcFv5nvPF1j4A5SiLiCj09ZbEw8o+f8OsQ7W96eYRaBBENJQejE8+CAg\n\
bf257+P2ZzjMxfBp+t04oq+4g+2lpLmwHexkXHZ6zbnvqTR4WsWNYYPQxdVISrVl\n\
U1G3DulbAgMBAAECggEAGyTgn/3OEz2UciLK+19VIhu15GldgtcXYJzOvYueQDoy\n\
DkxNabcbMRzEzRdGRp0UExWM9xEnqi1lFiDpLtHo65Z19ghmueuIvMM4dm6BbKY+\n\
yYYXBoTlHAoDH1UuoqPLBK1D59QkbT9jtwVu9CL1GPZUqtRLRW78EG1AjW/KqCGe\n\
FMCC1nGqm4IzjVPMoyXg5fwAw6eSqilEbKjWXj/vK/1Xh9R2+Gsq+Dep9GKNw/Zp\n\
2Y06a/z0NGG87uZmMbndwrCgYHpPKd1Ix9BHN0N7UjqDO00zCSvd+pbCmv4U/Syn\n\
thq6xTYB0zLtAroB5f0QMdRv9wChpIbhI3z5xLPZpQKBgQD4y3VVieEkoZ6SuDeu\n\
ga4F20u5dZK+wfKxwA7h52S+Mee2cFlwhvfn3DIHU9Sf3enTlhHo+FKwuaiCvmb2\n\
PkhEgPP/6uwdVIUO8uhjaYVHjZvCchQ+O5wpgRfRNzGEyYdouiyMYXTeyL3yFf11\n\
wZ0BmuPY7qC4/L4S35XSH/MozwKBgQDo/xb46dn1MUXvyi0zpdSHbp2CxcAwrHrU\n\
+tkY7uBkc/s0mXAXtMgEgPMrZ9kIpQ/M3OBj8EuJtBrCBsjCVeXvXjZHtTXj75qR\n\
O03FeQXaSz6rw1y3ph7npNuHdcfI1Uh4Fn+CABZ6Hf6A2gBnh8113Takd0bHIdl+\n\
fJzKRXHBtQKBgBg7QLdPEYWO1DH4DTxK1xcs76glgmBf5XJYgVqRPeekVqwXLy7d\n\
hmGnuZurF4dmhrKb6Cynmu4pdvcc8kxDbqh1Ys5nJA4LQFZfZDDigx+f9C6xC7Wv\n\
+pq0PwyacpE7S5vwngwiJc7ZAF8Gs0P30oHogw6K106NFzohWqc3g2hTAoGAY1mK\n\
SR8mIigdgy75cUFvy0P+g+mgluClC7Xe5oPNSOgvoHEg2+rpMwptJgAFCmufviIc\n\
yGCJRTF4C23rIvqPri7FBHSfgw8DIJRiCCcfuMJG+eS231RFb07bkPpG8zsGyLYH\n\
Lr6s1ut9PyI18+9zS6PFDgISOw0S+Z1XGeTcqdUCgYEAiNF7tq8PJIPWNyc1qK3r\n\
viM/EpjXB3dSwRtJMQjNFzKQB+5biHozsbVu58G5RC7WUp8+7r8mvM3x1cZX0FFj\n\
SyBgUYk071vVqmGnSaw5brfJhTGMS8Lz+obcnORRAwSX1TNH2dD8OojrjgbwnQBf\n\
z1QF5IhBTAZCrVGieB/dwco=\n\
-----END PRIVATE KEY-----\n\
";

/// A second fixed test key: inside every key `keys.create` hands out, and for "signed with the
/// wrong key" tests.
pub const OTHER_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCtowyM2o2G1Xxm\n\
MWk1Xbg8jv5E9j7Q/G0/OuZeJe/XYnWbXeXuNwxw7zkERWNcWi7UGdF5AdC+izeA\n\
Tg/cyfPS9K9zfRAn4ktFAbUDfSmNUjHbwHINCOPi6VS19dEYb7Y+BynY7TVgmbni\n\
9U/Qd8+7QSHtCEEdj41EsObCzYBJwJQiUNQOO/ipfvCiXfCu8lzDKzsseparBclh\n\
OC4t4pq6BD2o7FPy2XXEVsVeJaATunL7Urxi2A25P5VJ+itM02qEL20xIUgWyrE3\n\
DryayBnGko/RVSOYsII26+4ByLnVBcodMLiNyTcsxR5y9Q6Tczxy/QOFhltJ2B4P\n\
W0L6i7pHAgMBAAECggEASj+GhlSOYDG52BkY2/EPbxXWNLb3dXX7YSZWi7u9K2S2\n\
1ZD5WTvA3intP55MNpl5nMjNgej80f3F5d97ePYChRqMS94WondpqEBqnutOcVfM\n\
aiOIoXpDuCv+RTCwELr0OuHlSxVj1cLmcd5kGsig03mugCUfcvyHc/ARPQuS5/Xz\n\
khVPmI5i9fOvSdpTwwPok0tfLd8ci6HJHRDJES6GSbuBBtXnf7dTokmJYM5r3oH/\n\
OJXi0jkAnVdipEb9mo6ifB8vAIUFaMVmneqT06O52tulUKDKNhs5VzGYx/hPd2WM\n\
nPeVt4+796DzKyVoUZuZpcrHQshPXNSYyciWRlwhwQKBgQDv3C+u7yvdCQfT1Gp1\n\
/CcyWeTLDiVz64eiAXtoAbWi0itLkkXzn14edZXcEEfjUOOgpCbYE/ACRWvWcACA\n\
RYIKZWhfH26wwD5GAI9uq12RQT9NjQvu//BWKwlKLG+e0GB3x1q3GsSjXo+VzHl7\n\
aIrXwR+DNFlXu5jAoRycLNvQawKBgQC5UhtIgvtk4vsMKinfbV7T9vEOw6fXKHOD\n\
ieMohUOgyqwMmGCG3HHiEnz8gLtY0L5vADt/99U8uUDavBIPR88ZuALzw1Gh9HL+\n\
EuV0ZEaHEndJK5onA4tXEY8JU9cHJJvuQ/dOQ69oG/6f/6KkIZc+m3ZWwbkpgqoo\n\
K4KK5X1ElQKBgQDfNgy5wqETJSA/pOEdwvXHCZi8zgFUis7BmJd7Bnw9dVANF6Y5\n\
PQmdVteK3yvHArOR/rCXTJaBxpDAEaKlvAl0G0KxotKjcYOCKWtRFfARCKMcTDHa\n\
zBqgVZRjjk6hgFEFpmNpGmP7lDgSsyIqEfODLJlixAiQeGeCe2vgem5k2QKBgH6N\n\
VVhVKfuhDTMnb+TFuWYiUkd00R8a3pdLCDbZmm8pOAh53iD6VUK+wV9lQYrLMeB3\n\
VipzQcjv8RvuJp8MuJ6ljE6OaSah2g0rNkofWBJRR+hNwD04LGVO9lC2UjbshxdU\n\
joOBsTz1MRJt7dELp073tv5T2HBCbJR18fWL9dlpAoGBAKGhqvCMgq+ICtfafG7L\n\
bjKC5pcs7Z5jnknZ2ySOh+xxcmXRt6wh3iL6oWrkf6vSCvhK2zHVnn6c4P5oZYFU\n\
UY74M8OPateT0rZcJO0yDzLTauAnZ9IV0lg/6vzCL+I/WZWpx9qEkjHBVFiZkVdi\n\
Q1PxW+IieC32zM8StTp4rUUd\n\
-----END PRIVATE KEY-----\n\
";

pub(super) fn key_name(project: &str, email: &str, id: &str) -> String {
    format!("projects/{project}/serviceAccounts/{email}/keys/{id}")
}

pub(super) fn key_file_json(
    client_email: &str,
    key_id: &str,
    pem: &str,
    token_uri: &str,
) -> String {
    let project = client_email
        .split('@')
        .nth(1)
        .and_then(|d| d.split('.').next())
        .unwrap_or("unknown");
    serde_json::to_string_pretty(&json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{}", client_email.replace('@', "%40")),
        "universe_domain": "googleapis.com"
    }))
    .unwrap()
}

/// DER `RSAPublicKey` of a PKCS#8 PEM private key.
pub fn public_key_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64.trim()).expect("PEM body is base64");
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).expect("PKCS#8 RSA key");
    use ring::signature::KeyPair as _;
    pair.public_key().as_ref().to_vec()
}
