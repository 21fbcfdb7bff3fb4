//! Who holds which name: pure resolution of the names nodes claim, from the claims and the
//! proof behind each, into one owner per name.
//!
//! A node says what it is called (in its TLS claims and its signed node record), but saying is
//! not holding. A name is bound to a key by an allowlist entry that names it (strongest: the
//! operator wrote it down), or by a certificate the network key signed. A bare claim (a key in
//! `trusted_nodes` without a name) holds a name only while no bound claim and no other live
//! claimant that held it first contests it. Every other claimant of a held name is shown under
//! its key's short form and reported once as a conflict.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use crate::identity::PublicKey;

/// What makes a claim believable, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proof {
    /// The node says so (its own signed record, or the name in its TLS claims).
    Claimed,
    /// A certificate from the network key names it; an older certificate (earlier
    /// `not_before`) holds a name against a newer one, so every node picks the same holder.
    Certificate {
        /// The certificate's start of validity (`u64::MAX` when only the handshake showed it).
        not_before: Reverse<u64>,
    },
    /// This node's `trusted_nodes` entry names that key.
    Allowlist,
}

impl Proof {
    /// Strength of the kind of proof, whatever the certificate's age: a live claimant beats
    /// one that is not live with the same kind of proof.
    fn class(&self) -> u8 {
        match self {
            Proof::Claimed => 0,
            Proof::Certificate { .. } => 1,
            Proof::Allowlist => 2,
        }
    }

    /// Stable label, for logs and events.
    pub fn label(&self) -> &'static str {
        match self {
            Proof::Claimed => "claimed",
            Proof::Certificate { .. } => "certificate",
            Proof::Allowlist => "allowlist",
        }
    }
}

/// One key's claim to a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claimant.
    pub key: PublicKey,
    /// The name it claims.
    pub name: String,
    /// What backs it.
    pub proof: Proof,
    /// Whether the claimant is a live member (alive or suspect; the local node always is).
    pub live: bool,
}

/// A claim that lost its name to another key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Conflict {
    /// The name.
    pub name: String,
    /// The key that claims it and is not shown under it.
    pub claimant: PublicKey,
    /// How the claimant backed it.
    pub claimant_proof: &'static str,
    /// The key that holds it.
    pub holder: PublicKey,
    /// How the holder backs it.
    pub holder_proof: &'static str,
}

/// One key's entry in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// The name it claims.
    pub claimed: String,
    /// What backs the claim.
    pub proof: Proof,
    /// Whether it holds that name (else it is shown under its key's short form).
    pub holds: bool,
}

/// The resolved names: at most one key per name.
#[derive(Debug, Clone, Default)]
pub struct NameTable {
    entries: HashMap<PublicKey, NameEntry>,
    holders: HashMap<String, PublicKey>,
}

/// What a lookup by name, key or key prefix found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// One node.
    Found(PublicKey),
    /// Nothing.
    NotFound,
    /// A key prefix several known keys share.
    Ambiguous(Vec<PublicKey>),
}

impl NameTable {
    /// The name `key` is shown under, if it holds one.
    pub fn name(&self, key: &PublicKey) -> Option<&str> {
        self.entries.get(key).filter(|e| e.holds).map(|e| e.claimed.as_str())
    }

    /// The name `key` claims but does not hold.
    pub fn conflict(&self, key: &PublicKey) -> Option<&str> {
        self.entries.get(key).filter(|e| !e.holds).map(|e| e.claimed.as_str())
    }

    /// The key holding `name`.
    pub fn holder(&self, name: &str) -> Option<PublicKey> {
        self.holders.get(name).copied()
    }

    /// Finds a node by held name, then by whole base64 key, then by key prefix among `known`.
    /// Only the holder of a name is found by it: a claimant that lost it is found by its key.
    pub fn lookup(&self, query: &str, known: &[PublicKey]) -> Lookup {
        if let Some(k) = self.holder(query) {
            return Lookup::Found(k);
        }
        if let Ok(k) = query.parse::<PublicKey>() {
            return Lookup::Found(k);
        }
        let mut matches: Vec<PublicKey> = known
            .iter()
            .filter(|k| k.to_base64().starts_with(query))
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        matches.sort();
        match matches.len() {
            0 => Lookup::NotFound,
            1 => Lookup::Found(matches[0]),
            _ => Lookup::Ambiguous(matches),
        }
    }
}

/// The memory resolution needs between rounds: who held each name last (a bare claim keeps
/// its name against later claimants), in which order keys were first seen, and which
/// conflicts were already reported.
#[derive(Debug, Default)]
pub struct NameBook {
    held: HashMap<String, PublicKey>,
    first_seen: HashMap<PublicKey, u64>,
    seen_count: u64,
    reported: HashSet<Conflict>,
}

impl NameBook {
    /// Resolves `claims` (at most one per key) into a table, and returns the conflicts not
    /// reported before. A conflict that ends and comes back is reported again.
    pub fn resolve(&mut self, claims: &[Claim]) -> (NameTable, Vec<Conflict>) {
        let mut sorted: Vec<&Claim> = claims.iter().collect();
        // Keys new to this round are numbered in key order, so the outcome does not depend on
        // the order claims were listed in.
        sorted.sort_by_key(|c| c.key);
        for c in &sorted {
            if !self.first_seen.contains_key(&c.key) {
                self.first_seen.insert(c.key, self.seen_count);
                self.seen_count += 1;
            }
        }
        let mut by_name: HashMap<&str, Vec<&Claim>> = HashMap::new();
        for c in &sorted {
            by_name.entry(c.name.as_str()).or_default().push(c);
        }
        let mut table = NameTable::default();
        let mut conflicts = HashSet::new();
        for (name, candidates) in by_name {
            let previous = self.held.get(name);
            let rank = |c: &&&Claim| {
                (
                    c.proof.class(),
                    c.live,
                    c.proof,
                    previous == Some(&c.key),
                    Reverse(self.first_seen.get(&c.key).copied().unwrap_or(u64::MAX)),
                    Reverse(c.key),
                )
            };
            let Some(winner) = candidates.iter().max_by_key(rank) else {
                continue;
            };
            table.holders.insert(name.to_string(), winner.key);
            for c in &candidates {
                let holds = c.key == winner.key;
                table.entries.insert(
                    c.key,
                    NameEntry {
                        claimed: name.to_string(),
                        proof: c.proof,
                        holds,
                    },
                );
                if !holds {
                    conflicts.insert(Conflict {
                        name: name.to_string(),
                        claimant: c.key,
                        claimant_proof: c.proof.label(),
                        holder: winner.key,
                        holder_proof: winner.proof.label(),
                    });
                }
            }
        }
        self.held = table.holders.clone();
        // Keys no longer claiming anything are forgotten, so the memory stays bounded by the
        // keys the caller knows of.
        let present: HashSet<PublicKey> = claims.iter().map(|c| c.key).collect();
        self.first_seen.retain(|k, _| present.contains(k));
        let mut new: Vec<Conflict> = conflicts.difference(&self.reported).cloned().collect();
        new.sort_by(|a, b| a.name.cmp(&b.name).then(a.claimant.cmp(&b.claimant)));
        self.reported = conflicts;
        (table, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn key() -> PublicKey {
        SecretKey::generate().public()
    }

    fn claim(key: PublicKey, name: &str, proof: Proof, live: bool) -> Claim {
        Claim {
            key,
            name: name.into(),
            proof,
            live,
        }
    }

    fn cert(not_before: u64) -> Proof {
        Proof::Certificate {
            not_before: Reverse(not_before),
        }
    }

    #[test]
    fn a_bare_claim_keeps_its_name_against_a_later_claimant() {
        let (real, impostor) = (key(), key());
        let mut book = NameBook::default();
        let (t, c) = book.resolve(&[claim(real, "n1", Proof::Claimed, true)]);
        assert_eq!(t.name(&real), Some("n1"));
        assert!(c.is_empty());
        // The impostor arrives later, whatever its key sorts as.
        let claims = [
            claim(impostor, "n1", Proof::Claimed, true),
            claim(real, "n1", Proof::Claimed, true),
        ];
        let (t, c) = book.resolve(&claims);
        assert_eq!(t.name(&real), Some("n1"));
        assert_eq!(t.name(&impostor), None);
        assert_eq!(t.conflict(&impostor), Some("n1"));
        assert_eq!(t.holder("n1"), Some(real));
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].claimant, c[0].holder), (impostor, real));
        // Reported once while it lasts.
        assert!(book.resolve(&claims).1.is_empty());
        // The impostor goes away and comes back: reported again.
        book.resolve(&[claim(real, "n1", Proof::Claimed, true)]);
        assert_eq!(book.resolve(&claims).1.len(), 1);
    }

    #[test]
    fn a_down_holder_gives_way_to_a_live_claimant() {
        let (old, new) = (key(), key());
        let mut book = NameBook::default();
        book.resolve(&[claim(old, "db", Proof::Claimed, true)]);
        let (t, c) = book.resolve(&[
            claim(old, "db", Proof::Claimed, false),
            claim(new, "db", Proof::Claimed, true),
        ]);
        assert_eq!(t.holder("db"), Some(new));
        assert_eq!(t.conflict(&old), Some("db"));
        assert_eq!(c[0].claimant, old);
    }

    #[test]
    fn bindings_beat_claims_and_the_allowlist_beats_everything() {
        let (bound, cert_holder, claimant) = (key(), key(), key());
        let mut book = NameBook::default();
        // The claimant was first, but a certificate binds the name.
        book.resolve(&[claim(claimant, "web", Proof::Claimed, true)]);
        let (t, _) = book.resolve(&[
            claim(claimant, "web", Proof::Claimed, true),
            claim(cert_holder, "web", cert(100), true),
        ]);
        assert_eq!(t.holder("web"), Some(cert_holder));
        // An allowlist binding holds even for a key that is not live.
        let (t, c) = book.resolve(&[
            claim(claimant, "web", Proof::Claimed, true),
            claim(cert_holder, "web", cert(100), true),
            claim(bound, "web", Proof::Allowlist, false),
        ]);
        assert_eq!(t.holder("web"), Some(bound));
        assert_eq!(t.name(&cert_holder), None);
        assert_eq!(c.iter().filter(|c| c.holder == bound).count(), 2);
    }

    #[test]
    fn a_live_certificate_holder_beats_a_down_one_with_an_older_certificate() {
        let (old, new) = (key(), key());
        let (t, _) =
            NameBook::default().resolve(&[claim(old, "n1", cert(100), false), claim(new, "n1", cert(200), true)]);
        assert_eq!(t.holder("n1"), Some(new));
    }

    #[test]
    fn of_two_certificates_for_one_name_the_older_holds_it_on_every_node() {
        let (older, newer) = (key(), key());
        let claims = [claim(newer, "n1", cert(200), true), claim(older, "n1", cert(100), true)];
        // A node that saw the newer one first, and a fresh node, agree.
        let mut seen_newer_first = NameBook::default();
        seen_newer_first.resolve(&claims[..1]);
        let (a, _) = seen_newer_first.resolve(&claims);
        let (b, _) = NameBook::default().resolve(&claims);
        assert_eq!(a.holder("n1"), Some(older));
        assert_eq!(b.holder("n1"), Some(older));
    }

    #[test]
    fn lookups_by_name_key_and_prefix() {
        let keys: Vec<PublicKey> = (0..40).map(|_| key()).collect();
        let mut book = NameBook::default();
        let (t, _) = book.resolve(&[
            claim(keys[0], "n1", Proof::Claimed, true),
            claim(keys[1], "n1", Proof::Claimed, true),
        ]);
        let holder = t.holder("n1").unwrap();
        let loser = if holder == keys[0] { keys[1] } else { keys[0] };
        assert_eq!(t.lookup("n1", &keys), Lookup::Found(holder));
        assert_eq!(t.lookup(&loser.to_base64(), &keys), Lookup::Found(loser));
        assert_eq!(t.lookup(&loser.short(), &keys), Lookup::Found(loser));
        assert_eq!(t.lookup("nobody", &keys), Lookup::NotFound);
        // 40 keys over 64 first characters: some first character is shared.
        let mut by_first: HashMap<char, Vec<PublicKey>> = HashMap::new();
        for k in &keys {
            by_first
                .entry(k.to_base64().chars().next().unwrap())
                .or_default()
                .push(*k);
        }
        let (c, shared) = by_first.iter().find(|(_, v)| v.len() > 1).unwrap();
        let mut shared = shared.clone();
        shared.sort();
        assert_eq!(t.lookup(&c.to_string(), &keys), Lookup::Ambiguous(shared));
    }
}
