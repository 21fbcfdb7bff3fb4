//! `[network] trusted_nodes` entries: a bare key, or a key with the name bound to it.

use serde::Deserialize;

use crate::identity::PublicKey;

/// One `trusted_nodes` entry: a key admitted without a certificate, with the name bound to it
/// if the entry gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedNode {
    /// The admitted key.
    pub key: PublicKey,
    /// The name bound to it, if any.
    pub name: Option<String>,
}

impl From<PublicKey> for TrustedNode {
    fn from(key: PublicKey) -> Self {
        TrustedNode { key, name: None }
    }
}

impl<'de> Deserialize<'de> for TrustedNode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TrustedNode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a base64 public key, or a table { key = \"...\", name = \"...\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TrustedNode, E> {
                Ok(TrustedNode::from(v.parse::<PublicKey>().map_err(E::custom)?))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TrustedNode, A::Error> {
                use serde::de::Error;
                let (mut key, mut name) = (None, None);
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "key" => {
                            key = Some(
                                map.next_value::<String>()?
                                    .parse::<PublicKey>()
                                    .map_err(A::Error::custom)?,
                            )
                        }
                        "name" => name = Some(map.next_value::<String>()?),
                        other => return Err(A::Error::unknown_field(other, &["key", "name"])),
                    }
                }
                Ok(TrustedNode {
                    key: key.ok_or_else(|| A::Error::missing_field("key"))?,
                    name,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;

    #[test]
    fn trusted_nodes_take_bare_keys_and_named_entries() {
        let k1 = "Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=";
        let k2 = crate::identity::SecretKey::generate().public().to_string();
        let c = parse(&format!(
            "[network]\ntrusted_nodes = [{{ key = \"{k1}\", name = \"web-1\" }}, \"{k2}\"]\n"
        ))
        .unwrap();
        assert_eq!(c.network.trusted_nodes[0].name.as_deref(), Some("web-1"));
        assert_eq!(c.network.trusted_nodes[0].key.to_string(), k1);
        assert_eq!(c.network.trusted_nodes[1].name, None);
        for (entries, expect) in [
            (
                format!("{{ key = \"{k1}\", name = \"a\" }}, {{ key = \"{k2}\", name = \"a\" }}"),
                "bound to two keys",
            ),
            (format!("\"{k1}\", {{ key = \"{k1}\", name = \"a\" }}"), "listed twice"),
            (format!("{{ key = \"{k1}\", name = \"bad name\" }}"), "trusted_nodes"),
            (format!("{{ key = \"{k1}\", nmae = \"a\" }}"), "unknown field `nmae`"),
            ("{ name = \"a\" }".to_string(), "missing field `key`"),
            ("{ key = \"abc\", name = \"a\" }".to_string(), "invalid public key"),
        ] {
            let err = parse(&format!("[network]\ntrusted_nodes = [{entries}]\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expect) && (err.contains("line 2") || err.contains("shoal.toml:2:")),
                "{entries}: {err}"
            );
        }
    }
}
