//! Kafka's ACL model: bindings, filters and the decision, as Apache Kafka's
//! StandardAuthorizer makes it.
//!
//! ```text
//! binding   (resource type, pattern LITERAL|PREFIXED, name)
//!           + (principal, host, operation, ALLOW|DENY)
//! decision  super user            -> allowed
//!           any matching DENY     -> denied     (DENY wins)
//!           any matching ALLOW    -> allowed
//!           nothing matches       -> denied     (default deny)
//! ```
//!
//! A binding matches a request's resource when its name is the resource's
//! name, the literal wildcard `*`, or (PREFIXED) a prefix of it; its
//! principal when it is the caller's or `User:*`; its host when it is the
//! client's address or `*`. An ALLOW of READ, WRITE, DELETE or ALTER also
//! allows DESCRIBE, and ALTER_CONFIGS allows DESCRIBE_CONFIGS; a DENY denies
//! only its own operation (or ALL).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

macro_rules! kafka_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($variant),* }

        impl $name {
            /// The code Kafka's protocol uses.
            pub fn code(self) -> i8 {
                match self { $(Self::$variant => $code),* }
            }

            pub fn from_code(code: i8) -> Option<Self> {
                match code { $($code => Some(Self::$variant),)* _ => None }
            }

            /// The name Kafka's tools print.
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kafka_enum!(
    /// What an ACL protects.
    ResourceType {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
);

kafka_enum!(
    /// How an ACL's resource name matches.
    PatternType {
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    Operation {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
);

kafka_enum!(
    Permission {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

impl ResourceType {
    /// The operations a resource of this type has (Kafka's
    /// AclEntry.supportedOperations), for authorized-operations bitmasks.
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            Self::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            Self::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
            Self::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            Self::TransactionalId => &[Describe, Write],
            Self::DelegationToken => &[Describe],
            Self::User => &[CreateTokens, DescribeTokens],
        }
    }
}

/// Kafka's codes for "any" in filters.
const ANY: i8 = 1;
/// PatternType MATCH in filters: every pattern that would apply to the name.
const MATCH: i8 = 2;

/// The one name a CLUSTER resource has.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A LITERAL name matching every resource of its type; also the host and
/// (as `User:*`) the principal matching every client.
pub const WILDCARD: &str = "*";
const WILDCARD_PRINCIPAL: &str = "User:*";

/// One ACL binding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub name: String,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// An ACL as it arrives in CreateAcls: raw codes, checked by [`Acl::new`].
#[derive(Debug)]
pub struct AclCodes<'a> {
    pub resource_type: i8,
    pub pattern_type: i8,
    pub name: &'a str,
    pub principal: &'a str,
    pub host: &'a str,
    pub operation: i8,
    pub permission: i8,
}

impl Acl {
    /// A binding from CreateAcls, refused as Kafka refuses it (the message
    /// is Kafka's INVALID_REQUEST message).
    pub fn new(c: AclCodes<'_>) -> Result<Self, String> {
        let resource_type = ResourceType::from_code(c.resource_type).ok_or_else(|| {
            format!(
                "Invalid resourceType {}",
                resource_type_text(c.resource_type)
            )
        })?;
        let pattern_type = PatternType::from_code(c.pattern_type)
            .ok_or_else(|| format!("Invalid patternType {}", pattern_text(c.pattern_type)))?;
        let operation = Operation::from_code(c.operation)
            .filter(|_| c.operation > ANY)
            .ok_or_else(|| format!("Invalid operation {}", operation_text(c.operation)))?;
        let permission = Permission::from_code(c.permission)
            .ok_or_else(|| format!("Invalid permissionType {}", permission_text(c.permission)))?;
        if resource_type == ResourceType::Cluster && c.name != CLUSTER_NAME {
            return Err(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        if c.name.is_empty() {
            return Err("Invalid empty resource name".into());
        }
        check_principal(c.principal)?;
        if c.host.is_empty() {
            return Err("Invalid empty host".into());
        }
        Ok(Self {
            resource_type,
            pattern_type,
            name: c.name.to_owned(),
            principal: c.principal.to_owned(),
            host: c.host.to_owned(),
            operation,
            permission,
        })
    }

    /// Whether this binding applies to `principal` at `host` for `op`, and
    /// how; the resource is matched by the caller.
    fn decides(&self, principals: [&str; 2], host: &str, op: Operation) -> Option<Permission> {
        if !principals.contains(&self.principal.as_str()) {
            return None;
        }
        if self.host != WILDCARD && self.host != host {
            return None;
        }
        let applies = self.operation == Operation::All
            || self.operation == op
            || (self.permission == Permission::Allow
                && match op {
                    Operation::Describe => matches!(
                        self.operation,
                        Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                    ),
                    Operation::DescribeConfigs => self.operation == Operation::AlterConfigs,
                    _ => false,
                });
        applies.then_some(self.permission)
    }
}

/// As Kafka's AclBinding prints itself.
impl std::fmt::Display for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "(pattern=ResourcePattern(resourceType={}, name={}, patternType={}), entry=(principal={}, host={}, operation={}, permissionType={}))",
            self.resource_type,
            self.name,
            self.pattern_type,
            self.principal,
            self.host,
            self.operation,
            self.permission
        )
    }
}

/// Kafka principals are `Type:name` (KafkaPrincipal.fromString).
fn check_principal(p: &str) -> Result<(), String> {
    match p.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok(()),
        _ => Err(format!(
            "Could not parse principal from `{p}` (no colon is found separating the principal type from the principal name)"
        )),
    }
}

fn resource_type_text(code: i8) -> String {
    match code {
        ANY => "ANY".into(),
        c => ResourceType::from_code(c).map_or("UNKNOWN".into(), |t| t.name().into()),
    }
}

fn pattern_text(code: i8) -> String {
    match code {
        ANY => "ANY".into(),
        MATCH => "MATCH".into(),
        c => PatternType::from_code(c).map_or("UNKNOWN".into(), |t| t.name().into()),
    }
}

fn operation_text(code: i8) -> String {
    match code {
        ANY => "ANY".into(),
        c => Operation::from_code(c).map_or("UNKNOWN".into(), |t| t.name().into()),
    }
}

fn permission_text(code: i8) -> String {
    match code {
        ANY => "ANY".into(),
        c => Permission::from_code(c).map_or("UNKNOWN".into(), |t| t.name().into()),
    }
}

/// How a filter matches pattern types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatternFilter {
    Any,
    /// Every binding that would apply to the filter's name.
    Match,
    Exactly(PatternType),
}

/// DescribeAcls' and DeleteAcls' filter; `None` fields match anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclFilter {
    resource_type: Option<ResourceType>,
    pattern: PatternFilter,
    name: Option<String>,
    principal: Option<String>,
    host: Option<String>,
    operation: Option<Operation>,
    permission: Option<Permission>,
}

/// A filter as it arrives, with raw codes.
#[derive(Debug)]
pub struct FilterCodes<'a> {
    pub resource_type: i8,
    pub pattern_type: i8,
    pub name: Option<&'a str>,
    pub principal: Option<&'a str>,
    pub host: Option<&'a str>,
    pub operation: i8,
    pub permission: i8,
}

impl AclFilter {
    /// Refuses what Kafka refuses: an unknown code anywhere.
    pub fn new(c: FilterCodes<'_>) -> Result<Self, String> {
        fn any_or<T>(code: i8, parse: fn(i8) -> Option<T>) -> Result<Option<T>, ()> {
            if code == ANY {
                Ok(None)
            } else {
                parse(code).map(Some).ok_or(())
            }
        }
        let resource_type = any_or(c.resource_type, ResourceType::from_code);
        let pattern = match c.pattern_type {
            ANY => Ok(PatternFilter::Any),
            MATCH => Ok(PatternFilter::Match),
            p => PatternType::from_code(p)
                .map(PatternFilter::Exactly)
                .ok_or(()),
        };
        let (Ok(resource_type), Ok(pattern)) = (resource_type, pattern) else {
            return Err("Unknown patternFilter.".into());
        };
        let (Ok(operation), Ok(permission)) = (
            any_or(c.operation, Operation::from_code),
            any_or(c.permission, Permission::from_code),
        ) else {
            return Err("Unknown entryFilter.".into());
        };
        Ok(Self {
            resource_type,
            pattern,
            name: c.name.map(str::to_owned),
            principal: c.principal.map(str::to_owned),
            host: c.host.map(str::to_owned),
            operation,
            permission,
        })
    }

    /// Kafka's AclBindingFilter.matches.
    pub fn matches(&self, acl: &Acl) -> bool {
        if self.resource_type.is_some_and(|t| t != acl.resource_type) {
            return false;
        }
        let name_matches = match (&self.name, self.pattern) {
            (_, PatternFilter::Exactly(p)) if p != acl.pattern_type => false,
            (None, _) => true,
            (Some(name), PatternFilter::Any | PatternFilter::Exactly(_)) => *name == acl.name,
            (Some(name), PatternFilter::Match) => match acl.pattern_type {
                PatternType::Literal => *name == acl.name || acl.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&acl.name),
            },
        };
        name_matches
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

/// Every binding, indexed for decisions.
#[derive(Debug, Default)]
pub struct AclSet {
    /// Sorted, without duplicates.
    all: Vec<Acl>,
    /// (type, name) -> indexes into `all` of its LITERAL bindings.
    literal: HashMap<(ResourceType, String), Vec<usize>>,
    /// type -> indexes of its PREFIXED bindings.
    prefixed: HashMap<ResourceType, Vec<usize>>,
}

impl AclSet {
    pub fn new(mut all: Vec<Acl>) -> Self {
        all.sort();
        all.dedup();
        let mut literal: HashMap<_, Vec<usize>> = HashMap::new();
        let mut prefixed: HashMap<_, Vec<usize>> = HashMap::new();
        for (i, acl) in all.iter().enumerate() {
            match acl.pattern_type {
                PatternType::Literal => literal
                    .entry((acl.resource_type, acl.name.clone()))
                    .or_default()
                    .push(i),
                PatternType::Prefixed => prefixed.entry(acl.resource_type).or_default().push(i),
            }
        }
        Self {
            all,
            literal,
            prefixed,
        }
    }

    pub fn all(&self) -> &[Acl] {
        &self.all
    }

    /// Whether `principal` connecting from `host` may do `op` on the
    /// resource `(kind, name)`: DENY wins, and without a matching ALLOW the
    /// answer is no.
    pub fn allows(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        kind: ResourceType,
        name: &str,
    ) -> bool {
        let principals = [principal, WILDCARD_PRINCIPAL];
        let literal = |n: &str| {
            self.literal
                .get(&(kind, n.to_owned()))
                .into_iter()
                .flatten()
        };
        let prefixed = self
            .prefixed
            .get(&kind)
            .into_iter()
            .flatten()
            .filter(|&&i| name.starts_with(&self.all[i].name));
        let mut allowed = false;
        for &i in literal(name).chain(literal(WILDCARD)).chain(prefixed) {
            match self.all[i].decides(principals, host, op) {
                Some(Permission::Deny) => return false,
                Some(Permission::Allow) => allowed = true,
                None => {}
            }
        }
        allowed
    }

    /// Whether `principal` may do `op` on some resource of type `kind`
    /// (Kafka's authorizeByResourceType, used for idempotent producers).
    /// Only bindings for `op` itself or ALL count (nothing is implied).
    /// Any DENY on `*` refuses and any ALLOW on `*` allows; otherwise some
    /// ALLOW must be left that no DENY dominates: a LITERAL DENY of the
    /// same name, or a PREFIXED DENY on a prefix of its name.
    pub fn allows_some(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        kind: ResourceType,
    ) -> bool {
        let applies = |a: &&Acl| {
            a.resource_type == kind
                && (a.principal == principal || a.principal == WILDCARD_PRINCIPAL)
                && (a.host == WILDCARD || a.host == host)
                && (a.operation == op || a.operation == Operation::All)
        };
        let relevant: Vec<&Acl> = self.all.iter().filter(applies).collect();
        let denies = |p: PatternType| {
            relevant
                .iter()
                .filter(move |a| a.permission == Permission::Deny && a.pattern_type == p)
                .map(|a| a.name.as_str())
        };
        if denies(PatternType::Literal).any(|n| n == WILDCARD) {
            return false;
        }
        let allows = relevant
            .iter()
            .filter(|a| a.permission == Permission::Allow);
        if allows
            .clone()
            .any(|a| a.pattern_type == PatternType::Literal && a.name == WILDCARD)
        {
            return true;
        }
        allows.into_iter().any(|a| {
            let literal_denied = a.pattern_type == PatternType::Literal
                && denies(PatternType::Literal).any(|n| n == a.name);
            let prefix_denied = denies(PatternType::Prefixed).any(|n| a.name.starts_with(n));
            !literal_denied && !prefix_denied
        })
    }
}

/// A client address as Kafka writes it in ACL hosts (Java's
/// `InetAddress.getHostAddress`: IPv6 in eight groups, uncompressed).
pub fn host_of(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|s| format!("{s:x}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        kind: ResourceType,
        pattern: PatternType,
        name: &str,
        who: &str,
        op: Operation,
        p: Permission,
    ) -> Acl {
        Acl {
            resource_type: kind,
            pattern_type: pattern,
            name: name.into(),
            principal: who.into(),
            host: WILDCARD.into(),
            operation: op,
            permission: p,
        }
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn deny_wins_and_nothing_matching_denies() {
        let set = AclSet::new(vec![
            acl(Topic, Literal, WILDCARD, "User:alice", All, Allow),
            acl(Topic, Prefixed, "pay", "User:alice", Write, Deny),
        ]);
        assert!(set.allows("User:alice", "10.0.0.1", Write, Topic, "orders"));
        assert!(!set.allows("User:alice", "10.0.0.1", Write, Topic, "payments"));
        // The DENY is for WRITE only.
        assert!(set.allows("User:alice", "10.0.0.1", Read, Topic, "payments"));
        assert!(set.allows("User:alice", "10.0.0.1", Describe, Topic, "payments"));
        assert!(!set.allows("User:bob", "10.0.0.1", Read, Topic, "orders"));
        assert!(!set.allows("User:alice", "10.0.0.1", Read, Group, "orders"));
    }

    #[test]
    fn allows_imply_describe_but_denies_imply_nothing() {
        let set = AclSet::new(vec![
            acl(Topic, Literal, "t", "User:*", Read, Allow),
            acl(Topic, Literal, "u", "User:a", AlterConfigs, Allow),
            acl(Topic, Literal, "v", "User:a", All, Allow),
            acl(Topic, Literal, "v", "User:a", Read, Deny),
        ]);
        assert!(set.allows("User:x", "h", Describe, Topic, "t"));
        assert!(!set.allows("User:x", "h", Write, Topic, "t"));
        assert!(set.allows("User:a", "h", DescribeConfigs, Topic, "u"));
        assert!(!set.allows("User:a", "h", Describe, Topic, "u"));
        assert!(set.allows("User:a", "h", Describe, Topic, "v"));
        assert!(!set.allows("User:a", "h", Read, Topic, "v"));
    }

    #[test]
    fn hosts_match_exactly_or_by_wildcard() {
        let mut a = acl(Topic, Literal, "t", "User:a", Read, Allow);
        a.host = "10.0.0.1".into();
        let set = AclSet::new(vec![a]);
        assert!(set.allows("User:a", "10.0.0.1", Read, Topic, "t"));
        assert!(!set.allows("User:a", "10.0.0.2", Read, Topic, "t"));
        assert_eq!(host_of("::1".parse().unwrap()), "0:0:0:0:0:0:0:1");
        assert_eq!(host_of("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3");
    }

    #[test]
    fn idempotent_producers_need_a_write_somewhere() {
        let set = AclSet::new(vec![acl(Topic, Prefixed, "app-", "User:a", Write, Allow)]);
        assert!(set.allows_some("User:a", "h", Write, Topic));
        assert!(!set.allows_some("User:b", "h", Write, Topic));
        let set = AclSet::new(vec![
            acl(Topic, Prefixed, "app-", "User:a", Write, Allow),
            acl(Topic, Literal, WILDCARD, "User:a", Write, Deny),
        ]);
        assert!(!set.allows_some("User:a", "h", Write, Topic));
        // A DENY of the same name, or on a prefix of it, leaves nothing.
        let set = AclSet::new(vec![
            acl(Topic, Literal, "t", "User:a", Write, Allow),
            acl(Topic, Literal, "t", "User:a", Write, Deny),
        ]);
        assert!(!set.allows_some("User:a", "h", Write, Topic));
        let set = AclSet::new(vec![
            acl(Topic, Literal, "app-x", "User:a", Write, Allow),
            acl(Topic, Prefixed, "app-", "User:a", Write, Deny),
        ]);
        assert!(!set.allows_some("User:a", "h", Write, Topic));
        // Nothing is implied here: READ does not count for WRITE.
        let set = AclSet::new(vec![acl(Topic, Literal, "t", "User:a", Read, Allow)]);
        assert!(!set.allows_some("User:a", "h", Write, Topic));
    }

    fn filter(kind: i8, pattern: i8, name: Option<&str>) -> AclFilter {
        AclFilter::new(FilterCodes {
            resource_type: kind,
            pattern_type: pattern,
            name,
            principal: None,
            host: None,
            operation: ANY,
            permission: ANY,
        })
        .unwrap()
    }

    #[test]
    fn filters_match_as_kafkas() {
        let lit = acl(Topic, Literal, "orders", "User:a", Read, Allow);
        let wild = acl(Topic, Literal, WILDCARD, "User:a", Read, Allow);
        let pre = acl(Topic, Prefixed, "ord", "User:a", Read, Allow);
        let any = filter(ANY, ANY, Some("orders"));
        assert!(any.matches(&lit) && !any.matches(&wild) && !any.matches(&pre));
        let matching = filter(2, MATCH, Some("orders"));
        assert!(matching.matches(&lit) && matching.matches(&wild) && matching.matches(&pre));
        let prefixed = filter(2, 4, None);
        assert!(!prefixed.matches(&lit) && prefixed.matches(&pre));
        assert!(!filter(3, ANY, None).matches(&lit));
        let bad = FilterCodes {
            resource_type: 0,
            pattern_type: ANY,
            name: None,
            principal: None,
            host: None,
            operation: ANY,
            permission: ANY,
        };
        assert_eq!(AclFilter::new(bad).unwrap_err(), "Unknown patternFilter.");
    }

    #[test]
    fn bindings_are_refused_as_kafka_refuses_them() {
        let codes = |kind: i8, name: &'static str, principal: &'static str, op: i8| AclCodes {
            resource_type: kind,
            pattern_type: 3,
            name,
            principal,
            host: "*",
            operation: op,
            permission: 3,
        };
        assert_eq!(
            Acl::new(codes(1, "t", "User:a", 3)).unwrap_err(),
            "Invalid resourceType ANY"
        );
        assert_eq!(
            Acl::new(codes(2, "t", "User:a", 1)).unwrap_err(),
            "Invalid operation ANY"
        );
        assert_eq!(
            Acl::new(codes(2, "", "User:a", 3)).unwrap_err(),
            "Invalid empty resource name"
        );
        assert!(
            Acl::new(codes(4, "c", "User:a", 7))
                .unwrap_err()
                .contains("kafka-cluster")
        );
        assert!(
            Acl::new(codes(2, "t", "alice", 3))
                .unwrap_err()
                .contains("colon")
        );
        assert!(Acl::new(codes(4, CLUSTER_NAME, "User:a", 7)).is_ok());
    }
}
