//! PKCS#11 URIs (RFC 7512): how keys, certificates and tokens are named.
//!
//! `pkcs11:token=gw;object=alice;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/smimegw/pin`
//!
//! Path attributes (`;`-separated) select the token and object; query attributes (`&`-separated)
//! say how to reach it. Values are percent-encoded. Unknown attributes are kept as they are
//! (RFC 7512 §2.3 lets vendors add their own) but never used for matching.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::pin::PinSource;

/// The `type=` path attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    Public,
    Private,
    Cert,
    SecretKey,
    Data,
}

impl ObjectType {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "public" => ObjectType::Public,
            "private" => ObjectType::Private,
            "cert" => ObjectType::Cert,
            "secret-key" => ObjectType::SecretKey,
            "data" => ObjectType::Data,
            other => return Err(Error::Uri(format!("unknown type={other:?}"))),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            ObjectType::Public => "public",
            ObjectType::Private => "private",
            ObjectType::Cert => "cert",
            ObjectType::SecretKey => "secret-key",
            ObjectType::Data => "data",
        }
    }
}

/// A parsed PKCS#11 URI.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub object_type: Option<ObjectType>,
    pub module_path: Option<PathBuf>,
    pub module_name: Option<String>,
    pub pin_source: Option<PinSource>,
    /// Attributes we do not interpret, in order: (name, decoded value, is_query).
    pub other: Vec<(String, String, bool)>,
}

impl Pkcs11Uri {
    /// Parses `pkcs11:...`.
    pub fn parse(s: &str) -> Result<Self> {
        let rest = s
            .strip_prefix("pkcs11:")
            .ok_or_else(|| Error::Uri(format!("{:?} does not start with pkcs11:", short(s))))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri::default();
        let mut pin_value: Option<Zeroizing<String>> = None;
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, raw) = attr
                .split_once('=')
                .ok_or_else(|| Error::Uri(format!("path attribute {attr:?} has no '='")))?;
            let bytes = pct_decode(raw, name)?;
            let text = || {
                String::from_utf8(bytes.clone())
                    .map_err(|_| Error::Uri(format!("{name}= is not UTF-8")))
            };
            let set = |slot: &mut Option<String>| -> Result<()> {
                if slot.is_some() {
                    return Err(Error::Uri(format!("{name}= appears twice")));
                }
                *slot = Some(text()?);
                Ok(())
            };
            match name {
                "token" => set(&mut uri.token)?,
                "manufacturer" => set(&mut uri.manufacturer)?,
                "serial" => set(&mut uri.serial)?,
                "model" => set(&mut uri.model)?,
                "object" => set(&mut uri.object)?,
                "id" => uri.id = Some(bytes),
                "type" => uri.object_type = Some(ObjectType::parse(&text()?)?),
                "slot-id" => {
                    uri.slot_id = Some(
                        text()?
                            .parse()
                            .map_err(|_| Error::Uri("slot-id= is not a number".into()))?,
                    )
                }
                _ => uri.other.push((name.to_string(), text()?, false)),
            }
        }
        for attr in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (name, raw) = attr.split_once('=').ok_or_else(|| {
                Error::Uri(format!(
                    "query attribute {name:?} has no '='",
                    name = short(attr)
                ))
            })?;
            let bytes = Zeroizing::new(pct_decode(raw, name)?);
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| Error::Uri(format!("{name}= is not UTF-8")))?;
            match name {
                "module-path" => uri.module_path = Some(PathBuf::from(text)),
                "module-name" => uri.module_name = Some(text),
                "pin-source" => uri.pin_source = Some(PinSource::parse(&text)?),
                "pin-value" => pin_value = Some(Zeroizing::new(text)),
                _ => uri.other.push((name.to_string(), text, true)),
            }
        }
        if let Some(v) = pin_value {
            if uri.pin_source.is_some() {
                return Err(Error::Uri("pin-source and pin-value are both given".into()));
            }
            uri.pin_source = Some(PinSource::Value(v));
        }
        Ok(uri)
    }

    /// The module to load: `module-path`, else `module-name` looked up in the usual places.
    pub fn module(&self) -> Option<PathBuf> {
        if let Some(p) = &self.module_path {
            return Some(p.clone());
        }
        let name = self.module_name.as_ref()?;
        let file = if name.ends_with(".so") {
            name.clone()
        } else {
            format!("{name}.so")
        };
        [
            "/usr/lib/x86_64-linux-gnu/pkcs11",
            "/usr/lib/pkcs11",
            "/usr/lib/softhsm",
            "/usr/lib",
        ]
        .iter()
        .map(|d| PathBuf::from(d).join(&file))
        .find(|p| p.exists())
    }

    /// The same URI naming another object on this token (keeps module and PIN source).
    pub fn with_object(&self, label: &str, object_type: Option<ObjectType>) -> Self {
        let mut u = self.clone();
        u.object = Some(label.to_string());
        u.object_type = object_type;
        u.id = None;
        u
    }
}

impl fmt::Display for Pkcs11Uri {
    /// Prints the URI. A `pin-value` is printed as `pin-value=***` so logs never hold it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path: Vec<String> = Vec::new();
        let mut push = |n: &str, v: &[u8]| path.push(format!("{n}={}", pct_encode(v, false)));
        if let Some(v) = &self.manufacturer {
            push("manufacturer", v.as_bytes());
        }
        if let Some(v) = &self.model {
            push("model", v.as_bytes());
        }
        if let Some(v) = &self.serial {
            push("serial", v.as_bytes());
        }
        if let Some(v) = &self.token {
            push("token", v.as_bytes());
        }
        if let Some(v) = self.slot_id {
            push("slot-id", v.to_string().as_bytes());
        }
        if let Some(v) = &self.object {
            push("object", v.as_bytes());
        }
        if let Some(v) = self.object_type {
            push("type", v.as_str().as_bytes());
        }
        if let Some(id) = &self.id {
            path.push(format!(
                "id={}",
                id.iter().map(|b| format!("%{b:02X}")).collect::<String>()
            ));
        }
        for (n, v, q) in &self.other {
            if !q {
                path.push(format!("{n}={}", pct_encode(v.as_bytes(), false)));
            }
        }
        let mut query: Vec<String> = Vec::new();
        if let Some(p) = &self.module_path {
            query.push(format!(
                "module-path={}",
                pct_encode(p.to_string_lossy().as_bytes(), true)
            ));
        }
        if let Some(n) = &self.module_name {
            query.push(format!("module-name={}", pct_encode(n.as_bytes(), true)));
        }
        match &self.pin_source {
            Some(PinSource::Value(_)) => query.push("pin-value=***".into()),
            Some(src) => {
                if let Some(v) = src.to_uri_value() {
                    query.push(format!("pin-source={}", pct_encode(v.as_bytes(), true)));
                }
            }
            None => {}
        }
        for (n, v, q) in &self.other {
            if *q {
                query.push(format!("{n}={}", pct_encode(v.as_bytes(), true)));
            }
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11Uri({self})")
    }
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Pkcs11Uri::parse(s)
    }
}

fn short(s: &str) -> String {
    // Never echo a whole URI back: it may hold a pin-value.
    match s.find("pin-value") {
        Some(i) => format!("{}...", &s[..i]),
        None => s.chars().take(80).collect(),
    }
}

fn pct_decode(s: &str, name: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Uri(format!("bad percent-encoding in {name}=")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes all but RFC 3986 unreserved characters and the few RFC 7512 allows in
/// path (`:[]@!$'()*+,=&`) or query (`/?|:[]@!$'()*+,=`) values.
fn pct_encode(v: &[u8], query: bool) -> String {
    let extra: &[u8] = if query {
        b"/?|:[]@!$'()*+,="
    } else {
        b":[]@!$'()*+,=&"
    };
    let mut s = String::with_capacity(v.len());
    for &c in v {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) || extra.contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_examples() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(u.object_type, Some(ObjectType::Cert));
        assert_eq!(
            u.id.as_deref(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        assert_eq!(u.serial.as_deref(), Some(""));

        let u = Pkcs11Uri::parse(
            "pkcs11:token=gw;object=alice;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234",
        )
        .unwrap();
        assert_eq!(
            u.module().unwrap(),
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert!(matches!(&u.pin_source, Some(PinSource::Value(v)) if v.as_str() == "1234"));
        let printed = u.to_string();
        assert!(!printed.contains("1234"), "{printed}");
        assert!(printed.contains("pin-value=***"));
    }

    #[test]
    fn round_trips() {
        for s in [
            "pkcs11:token=gw;object=alice;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/smimegw/pin",
            "pkcs11:token=My%20Token;object=a%3Bb;id=%01%02?pin-source=env:SMIMEGW_PIN",
            "pkcs11:slot-id=7;x-vendor=1?module-name=opensc-pkcs11&x-q=2",
            "pkcs11:",
        ] {
            let u = Pkcs11Uri::parse(s).unwrap();
            assert_eq!(u.to_string(), s);
            assert_eq!(Pkcs11Uri::parse(&u.to_string()).unwrap(), u);
        }
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        for (s, want) in [
            ("http://x", "does not start with pkcs11:"),
            ("pkcs11:token", "has no '='"),
            ("pkcs11:token=%zz", "percent-encoding"),
            ("pkcs11:type=nonsense", "unknown type"),
            ("pkcs11:token=a;token=b", "twice"),
            ("pkcs11:?pin-source=bogus", "unknown pin-source"),
            ("pkcs11:?pin-value=1&pin-source=env:X", "both"),
            ("pkcs11:slot-id=x", "not a number"),
        ] {
            let e = Pkcs11Uri::parse(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
        let e = Pkcs11Uri::parse("nope?pin-value=secret")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
