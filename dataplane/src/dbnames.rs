//! CouchDB database names.
//!
//! The owner's data database is `userdata-` followed by the lower-case hex encoding of the
//! DID's UTF-8 bytes. Hex is injective, so distinct DIDs can never share a database (the
//! original lower-cased the case-sensitive base58 text, which could collide), and the
//! result always matches CouchDB's `^[a-z][a-z0-9_$()+/-]*$` and stays under its
//! 238-character limit (a `did:vibe:` DID is 57 characters → 123 characters).

use vibe_identity::Did;

/// Prefix of every owner data database.
pub const USER_DB_PREFIX: &str = "userdata-";

/// The data database of `owner`.
pub fn user_db_name(owner: &Did) -> String {
    format!(
        "{USER_DB_PREFIX}{}",
        hex::encode(owner.to_string().as_bytes())
    )
}

/// Whether `name` is a valid CouchDB database name.
pub fn is_valid_db_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 238
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_$()+/-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vibe_identity::Keypair;

    #[test]
    fn names_are_valid_distinct_and_stable() {
        let a = Keypair::from_seed([1; 32]).did();
        let b = Keypair::from_seed([2; 32]).did();
        let (na, nb) = (user_db_name(&a), user_db_name(&b));
        assert!(is_valid_db_name(&na), "{na}");
        assert_ne!(na, nb);
        assert_eq!(na, user_db_name(&a));
        assert!(na.len() <= 238);
    }

    #[test]
    fn case_only_differences_do_not_collide() {
        // Two DID strings that differ only in letter case map to different names
        // (the original's lower-casing mapped them to one).
        let hex_upper = hex::encode("did:vibe:zAbC".as_bytes());
        let hex_lower = hex::encode("did:vibe:zabc".as_bytes());
        assert_ne!(hex_upper, hex_lower);
    }

    #[test]
    fn validity_rules() {
        assert!(is_valid_db_name("vibe_system"));
        assert!(!is_valid_db_name("Vibe"));
        assert!(!is_valid_db_name("_users"));
        assert!(!is_valid_db_name("9abc"));
        assert!(!is_valid_db_name(""));
    }
}
