//! Just enough DER reading to show a certificate on the Certificates page and time its
//! renewal: the issuer's common name and the validity window of the leaf certificate.
//! (rustls checks certificates itself; this never decides whether one is trusted.)

use time::{Date, Month, PrimitiveDateTime, Time};

/// What the page and the renewal timer need from a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The issuer's CN (else its O), e.g. "R11" or "Pebble Intermediate CA 1a2b3c".
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// One DER element: (tag, content, the bytes after it).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Reads the issuer and validity of a DER certificate; `None` when it is not one.
pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    let (0x02, _, rest) = tlv(rest)? else {
        return None; // serial
    };
    let (0x30, _, rest) = tlv(rest)? else {
        return None; // signature algorithm
    };
    let (0x30, issuer, rest) = tlv(rest)? else {
        return None;
    };
    let (0x30, validity, _) = tlv(rest)? else {
        return None;
    };
    let (t1, nb, rest) = tlv(validity)?;
    let (t2, na, _) = tlv(rest)?;
    Some(CertInfo {
        issuer: issuer_name(issuer),
        not_before: asn1_time(t1, nb)?,
        not_after: asn1_time(t2, na)?,
    })
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

fn issuer_name(mut name: &[u8]) -> String {
    let (mut cn, mut org) = (None, None);
    while let Some((0x31, set, rest)) = tlv(name) {
        name = rest;
        let mut set = set;
        while let Some((0x30, atv, more)) = tlv(set) {
            set = more;
            if let Some((0x06, oid, value)) = tlv(atv)
                && let Some((_, text, _)) = tlv(value)
            {
                let text = String::from_utf8_lossy(text).into_owned();
                if oid == OID_CN {
                    cn = Some(text);
                } else if oid == OID_O {
                    org = Some(text);
                }
            }
        }
    }
    cn.or(org).unwrap_or_else(|| "unknown issuer".into())
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn asn1_time(tag: u8, v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy: i32 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let n = |i: usize| rest.get(i..i + 2).and_then(|p| p.parse::<u8>().ok());
    let date = Date::from_calendar_date(year, Month::try_from(n(0)?).ok()?, n(2)?).ok()?;
    let time = Time::from_hms(n(4)?, n(6)?, n(8)?).ok()?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_issuer_and_validity_of_a_generated_certificate() {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Test Issuing CA");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut leaf = rcgen::CertificateParams::new(vec!["shop.example.org".into()]).expect("p");
        leaf.not_before = rcgen::date_time_ymd(2026, 1, 2);
        leaf.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = leaf.signed_by(&key, &issuer).expect("leaf");
        let info = parse(cert.der()).expect("parsed");
        assert_eq!(info.issuer, "Test Issuing CA");
        assert_eq!(info.not_before, 1_767_312_000);
        assert_eq!(info.not_after, 2_524_521_600);
        assert!(parse(ca_cert.der()).is_some());
        assert_eq!(parse(b"not a certificate"), None);
        assert_eq!(parse(&cert.der()[..40]), None);
    }
}
