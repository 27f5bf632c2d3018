//! Config tests: the sample loads, defaults fill in, effective TOML round-trips, and every broken
//! config is refused with a message naming its key.

use super::*;

const MINIMAL: &str = r#"
[[servers]]
address = "2001:db8::547"
"#;

fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/lqagent.toml")
}

#[test]
fn sample_config_loads() {
    let c = Config::load(&sample_path()).expect("deploy/lqagent.toml must validate");
    assert_eq!(c.servers.len(), 2);
    assert_eq!(c.servers[1].name, "dhcp-b");
    assert_eq!(
        c.links[0].link_address,
        "2001:db8:100::1".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(c.links[1].subscriber_prefixes.len(), 2);
    assert!(c.links[1].trigger, "trigger defaults to true per link");
    assert_eq!(
        c.bulk.queries,
        vec![LeasequeryType::LinkAddress, LeasequeryType::RelayId]
    );
    assert_eq!(c.routes.protocol, 211);
    assert_eq!(c.identity.relay_duid.as_ref().map(|d| d.len()), Some(10));
}

/// The bulk query types are spelled as in the metrics (`relay_id`); the hyphenated spelling that
/// configurations in the field use (`relay-id`) means the same.
#[test]
fn bulk_queries_take_the_metric_spelling_and_the_older_hyphenated_one() {
    let conf = |q: &str| {
        format!(
            "[identity]\nrelay_duid = \"000300010200000000aa\"\n[bulk]\nqueries = {q}\n\
             remote_ids = [{{ enterprise = 9, id = \"01\" }}]\n[[servers]]\naddress = \"2001:db8::1\"\n"
        )
    };
    let all = vec![
        LeasequeryType::RelayId,
        LeasequeryType::LinkAddress,
        LeasequeryType::RemoteId,
    ];
    for q in [
        r#"["relay_id", "link_address", "remote_id"]"#,
        r#"["relay-id", "link-address", "remote-id"]"#,
    ] {
        let c = Config::parse(&conf(q)).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert_eq!(c.bulk.queries, all, "{q}");
    }
    assert!(
        Config::parse(&conf(r#"["address"]"#)).is_err(),
        "not a bulk query"
    );
}

#[test]
fn minimal_config_takes_documented_defaults() {
    let c = Config::parse(MINIMAL).unwrap();
    assert_eq!(c.metrics.listen, "127.0.0.1:9567".parse().unwrap());
    assert_eq!(c.control.socket, PathBuf::from("/run/lqagent/control.sock"));
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/lqagent"));
    assert_eq!(c.policy, ServerPolicy::Failover);
    assert_eq!(c.requestor.timeout, Duration::from_secs(1));
    assert_eq!(c.requestor.max_timeout, Duration::from_secs(10));
    assert_eq!(c.requestor.attempts, 5);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.routes.table, 254);
    assert!(!c.trigger.enforcement);
    assert_eq!(
        c.servers[0].name, "2001:db8::547",
        "name defaults to the address"
    );
    assert!(c.bulk.enabled);
    let many = Config::parse("[bulk]\nattempts = 500\n[[servers]]\naddress = \"2001:db8::1\"\n")
        .expect("hundreds of bulk attempts are fine");
    assert_eq!(many.bulk.attempts, 500);
    assert_eq!(c.bulk.queries, vec![LeasequeryType::LinkAddress]);
    assert!(c.links.is_empty());
}

#[test]
fn completeness_and_sequence_number_keys() {
    let c = Config::parse(MINIMAL).unwrap();
    assert!(
        !c.servers[0].complete_answers,
        "silence removes nothing by default"
    );
    assert_eq!(c.leasequery.srsn_option, None, "off by default");
    let c = Config::parse(
        "[leasequery]\nsrsn_option = 65001\n\
         [[servers]]\naddress = \"2001:db8::1\"\ncomplete_answers = true\n\
         [[servers]]\naddress = \"2001:db8::2\"\n",
    )
    .unwrap();
    assert_eq!(c.leasequery.srsn_option, Some(65001));
    assert!(c.servers[0].complete_answers && !c.servers[1].complete_answers);
    let again = Config::parse(&c.to_toml()).unwrap();
    assert_eq!(c, again);
}

#[test]
fn effective_toml_round_trips() {
    for text in [
        std::fs::read_to_string(sample_path()).unwrap(),
        MINIMAL.to_string(),
    ] {
        let c = Config::parse(&text).unwrap();
        let printed = c.to_toml();
        let again = Config::parse(&printed)
            .unwrap_or_else(|e| panic!("effective config does not parse: {e}\n{printed}"));
        assert_eq!(c, again);
        assert!(printed.contains("listen = \"127.0.0.1:9567\""), "{printed}");
    }
}

/// Each broken config, the key its error must name, and a word the message must contain.
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "[leasequery]\nsrsn_option = 45\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "leasequery.srsn_option",
        "not free",
    ),
    (
        "[leasequery]\nsrsn_option = 0\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "leasequery.srsn_option",
        "reserved",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[servers]]\naddress = \"10.0.0.1\"\n",
        "servers[1].address",
        "not an IPv6 address",
    ),
    ("", "servers", "at least one"),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "servers[1].address",
        "same address",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\nport = 547\n",
        "servers[0].port",
        "unknown field `port`",
    ),
    (
        "bogus = 1\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "bogus",
        "unknown field `bogus`",
    ),
    (
        "[requestor]\nattempts = 11\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "requestor.attempts",
        "out of range 1..=10",
    ),
    (
        "[requestor]\nattempts = \"five\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "requestor.attempts",
        "invalid type",
    ),
    (
        "[requestor]\ntimeout_secs = 0\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "requestor.timeout_secs",
        "out of range",
    ),
    (
        "[requestor]\ntimeout_secs = 5\nmax_timeout_secs = 2\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "requestor.max_timeout_secs",
        "below",
    ),
    (
        "[requestor]\npolicy = \"random\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "requestor.policy",
        "failover",
    ),
    (
        "[requestor]\nsource_address = \"10.0.0.1\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "requestor.source_address",
        "not an IPv6 address",
    ),
    (
        "[requestor]\nsource_address = \"::\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "requestor.source_address",
        "cannot be a source address",
    ),
    (
        "[limits]\nglobal_qps = 10\nper_link_qps = 20\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "limits.per_link_qps",
        "above limits.global_qps",
    ),
    (
        "[metrics]\nlisten = \"localhost\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "metrics.listen",
        "not a socket address",
    ),
    (
        "[control]\nsocket = \"control.sock\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "control.socket",
        "absolute",
    ),
    (
        "[log]\nformat = \"xml\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "log.format",
        "json",
    ),
    (
        "[log]\nlevel = \"lqagent=loud\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "log.level",
        "tracing filter",
    ),
    (
        "[routes]\ntable = 255\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "routes.table",
        "local",
    ),
    (
        "[routes]\nprotocol = 4\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "routes.protocol",
        "out of range 5..=255",
    ),
    (
        "[trigger]\nnflog_group = 70000\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "trigger.nflog_group",
        "out of range",
    ),
    (
        "[trigger]\nenabled = false\nenforcement = true\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "trigger.enforcement",
        "trigger.enabled",
    ),
    (
        "[snoop]\ninterfaces = [\"eth0\", \"a/b\"]\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "snoop.interfaces[1]",
        "interface name",
    ),
    (
        "[identity]\nrelay_duid = \"zz\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "identity.relay_duid",
        "hex",
    ),
    (
        "[bulk]\nqueries = [\"relay-id\"]\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "bulk.queries",
        "identity.relay_duid",
    ),
    (
        "[bulk]\nqueries = [\"by-mac\"]\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "bulk.queries[0]",
        "link_address",
    ),
    (
        "[bulk]\nqueries = [\"link_address\", \"link-address\"]\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "bulk.queries[1]",
        "listed twice",
    ),
    (
        "[bulk]\npipeline_depth = 0\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "bulk.pipeline_depth",
        "out of range",
    ),
    (
        "[bulk]\nattempts = 1001\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "bulk.attempts",
        "1..=1000",
    ),
    (
        "[bulk]\nattempts = 0\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "bulk.attempts",
        "out of range",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"eth1\"\nlink_address = \"2001:db8:1::1\"\nsubscriber_prefixes = [\"::/0\"]\n",
        "links[0].subscriber_prefixes[0]",
        "shorter than /32",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"eth1\"\nlink_address = \"2001:db8:1::1\"\nsubscriber_prefixes = [\"2001:db8:1::/64\", \"2000::/16\"]\n",
        "links[0].subscriber_prefixes[1]",
        "shorter than /32",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"eth1\"\nlink_address = \"2001:db8:1::1\"\nsubscriber_prefixes = [\"fe80::/64\"]\n",
        "links[0].subscriber_prefixes[0]",
        "link-local",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"eth1\"\nlink_address = \"2001:db8:1::1\"\nsubscriber_prefixes = [\"ff05::/64\"]\n",
        "links[0].subscriber_prefixes[0]",
        "multicast",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"eth1\"\nlink_address = \"2001:db8:1::1\"\nsubscriber_prefixes = [\"::ffff:0:0/96\"]\n",
        "links[0].subscriber_prefixes[0]",
        "not a global unicast prefix",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"lo\"\nlink_address = \"2001:db8:1::1\"\nsubscriber_prefixes = [\"2001:db8:1::/64\"]\n",
        "links[0].interface",
        "loopback",
    ),
    (
        "[snoop]\ninterfaces = [\"eth0\", \"up0\"]\n[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"up0\"\nlink_address = \"2001:db8:1::1\"\nsubscriber_prefixes = [\"2001:db8:1::/64\"]\n",
        "links[0].interface",
        "snoop.interfaces[1]",
    ),
    (
        "[trigger]\nnft_path = \"nft\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "trigger.nft_path",
        "absolute",
    ),
    (
        "[bulk]\nmax_connections = 0\n[[servers]]\naddress = \"2001:db8::1\"\n",
        "bulk.max_connections",
        "out of range",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"eth1\"\nlink_address = \"ff02::1\"\nsubscriber_prefixes = [\"2001:db8:1::/48\"]\n",
        "links[0].link_address",
        "unicast",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"eth1\"\nlink_address = \"2001:db8:1::1\"\nsubscriber_prefixes = [\"2001:db8:1::1/48\"]\n",
        "links[0].subscriber_prefixes[0]",
        "host bits",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"eth1\"\nlink_address = \"2001:db8:1::1\"\n",
        "links[0].subscriber_prefixes",
        "at least one",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"eth1\"\nlink_address = \"2001:db8:1::1\"\nsubscriber_prefixes = [\"2001:db8:1::/48\"]\n[[links]]\nname = \"l1\"\ninterface = \"eth2\"\nlink_address = \"2001:db8:2::1\"\nsubscriber_prefixes = [\"2001:db8:2::/48\"]\n",
        "links[1].name",
        "used by another link",
    ),
    (
        "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\nlink_address = \"2001:db8:1::1\"\n",
        "links[0]",
        "missing field `interface`",
    ),
    ("[[servers]\naddress = 1\n", "(top level)", "line 1"),
];

#[test]
fn broken_configs_name_the_key() {
    for (text, key, word) in BROKEN {
        let err = Config::parse(text).expect_err(&format!("accepted broken config:\n{text}"));
        let msg = err.to_string();
        assert_eq!(err.key(), *key, "wrong key for:\n{text}\nmessage: {msg}");
        assert!(
            msg.starts_with(&format!("{key}: ")),
            "message must start with the key: {msg}"
        );
        assert!(msg.contains(word), "message {msg:?} lacks {word:?}");
    }
}

#[test]
fn missing_file_is_a_read_error() {
    let err = Config::load(Path::new("/nonexistent/lqagent.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/lqagent.toml"));
}

/// Every key of the effective configuration has a row in docs/config.md, and the minimal
/// example there validates.
#[test]
fn docs_config_md_covers_every_key() {
    let docs =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/config.md"))
            .unwrap();
    let sample = Config::load(&sample_path()).unwrap();
    let value: toml::Value = toml::from_str(&sample.to_toml()).unwrap();
    let mut keys = Vec::new();
    fn walk(v: &toml::Value, keys: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    if !v.is_table()
                        && !v.as_array().is_some_and(|a| a.iter().any(|e| e.is_table()))
                    {
                        keys.push(k.clone());
                    }
                    walk(v, keys);
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|e| walk(e, keys)),
            _ => {}
        }
    }
    walk(&value, &mut keys);
    assert!(keys.len() > 30, "{keys:?}");
    for k in keys {
        assert!(
            docs.contains(&format!("| `{k}` |")),
            "docs/config.md has no row for `{k}`"
        );
    }
    let minimal = docs
        .split("## A minimal file")
        .nth(1)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .collect::<Vec<_>>()
        .join("\n");
    Config::parse(&minimal).expect("the minimal file in docs/config.md validates");
}

#[test]
fn readme_config_example_validates() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("README has a ```toml block");
    let c = Config::parse(block).expect("README's config example validates");
    assert_eq!(c.log.format, LogFormat::Json);
}

/// The cache caps (RFC 8987 G-5..G-7): documented defaults, set values reach the cache's merge
/// settings, and 0 or absurd values are refused naming the key.
#[test]
fn cache_cap_keys_default_validate_and_reach_the_cache() {
    let c = Config::parse(MINIMAL).unwrap();
    let l = &c.limits;
    assert_eq!(
        (
            l.max_prefixes_per_client,
            l.max_addresses_per_client,
            l.max_bindings_per_link,
            l.max_bindings_per_interface,
            l.max_bindings,
            c.routes.max_routes,
        ),
        (8, 8, 1_000_000, 262_144, 2_000_000, 2_000_000)
    );
    assert_eq!(
        crate::daemon::settings::installer_config(&c).max_routes,
        2_000_000
    );
    let set = Config::parse(
        "[limits]\nmax_prefixes_per_client = 2\nmax_addresses_per_client = 3\n\
         max_bindings_per_link = 40\nmax_bindings_per_interface = 30\nmax_bindings = 50\n\
         [routes]\nmax_routes = 60\n[[servers]]\naddress = \"2001:db8::1\"\n",
    )
    .unwrap();
    let m = crate::daemon::settings::cache_config(&set).merge;
    assert_eq!(
        (
            m.max_prefixes_per_client,
            m.max_addresses_per_client,
            m.max_bindings_per_link,
            m.max_bindings_per_interface,
            m.max_bindings
        ),
        (2, 3, 40, 30, 50)
    );
    assert_eq!(
        crate::daemon::settings::installer_config(&set).max_routes,
        60
    );
    let back = Config::parse(&set.to_toml()).unwrap();
    assert_eq!(back.limits, set.limits, "the effective TOML keeps the caps");
    assert_eq!(back.routes, set.routes, "and routes.max_routes");
    for (text, key, word) in [
        (
            "max_prefixes_per_client = 0",
            "limits.max_prefixes_per_client",
            "out of range",
        ),
        (
            "max_addresses_per_client = 0",
            "limits.max_addresses_per_client",
            "out of range",
        ),
        (
            "max_addresses_per_client = 1000000",
            "limits.max_addresses_per_client",
            "out of range",
        ),
        (
            "max_bindings_per_link = 0",
            "limits.max_bindings_per_link",
            "out of range",
        ),
        ("max_bindings = 0", "limits.max_bindings", "out of range"),
        (
            "max_bindings = 1000000000",
            "limits.max_bindings",
            "out of range",
        ),
        (
            "max_bindings = 10\nmax_bindings_per_link = 11",
            "limits.max_bindings_per_link",
            "above limits.max_bindings",
        ),
        (
            "max_bindings_per_interface = 0",
            "limits.max_bindings_per_interface",
            "out of range",
        ),
        // Every binding is a route: no cap may pass routes.max_routes.
        (
            "max_bindings = 2000001",
            "limits.max_bindings",
            "above routes.max_routes",
        ),
        (
            "[routes]\nmax_routes = 1000",
            "limits.max_bindings",
            "above routes.max_routes",
        ),
        (
            "max_bindings = 1000\nmax_bindings_per_link = 1000\nmax_bindings_per_interface = 1000\n\
             [routes]\nmax_routes = 999",
            "limits.max_bindings",
            "above routes.max_routes",
        ),
        (
            "max_bindings = 100\nmax_bindings_per_link = 100\nmax_bindings_per_interface = 101\n\
             [routes]\nmax_routes = 100",
            "limits.max_bindings_per_interface",
            "above routes.max_routes",
        ),
        (
            "max_bindings = 100\nmax_bindings_per_link = 100\nmax_bindings_per_interface = 100\n\
             [routes]\nmax_routes = 0",
            "routes.max_routes",
            "out of range",
        ),
    ] {
        let text = format!("[limits]\n{text}\n[[servers]]\naddress = \"2001:db8::1\"\n");
        let err = Config::parse(&text).expect_err(&text);
        assert_eq!(err.key(), key, "{err}");
        assert!(err.to_string().contains(word), "{err}");
    }
}

#[test]
fn ldra_defaults_off_and_is_read_per_link() {
    let base = "[[servers]]\naddress = \"2001:db8::1\"\n[[links]]\nname = \"l1\"\ninterface = \"eth1\"\nlink_address = \"2001:db8:1::1\"\nsubscriber_prefixes = [\"2001:db8:1::/48\"]\n";
    let c = Config::parse(base).unwrap();
    assert!(!c.links[0].ldra, "no LDRA unless the operator says so");
    let c = Config::parse(&format!("{base}ldra = true\n")).unwrap();
    assert!(c.links[0].ldra);
    let again = Config::parse(&c.to_toml()).unwrap();
    assert_eq!(c, again, "ldra survives the effective config");
    let err = Config::parse(&format!("{base}ldra = \"yes\"\n")).expect_err("not a bool");
    assert!(err.to_string().contains("ldra"), "{err}");
}

/// The edges of the refusals above are accepted: a /32, a unique-local prefix, an interface
/// that is neither snooped nor loopback; `nft` by absolute path, the default or configured.
#[test]
fn subscriber_prefixes_from_a_32_and_nft_by_absolute_path_are_accepted() {
    let c = Config::parse(
        "[snoop]\ninterfaces = [\"up0\"]\n[[servers]]\naddress = \"2001:db8::1\"\n\
         [[links]]\nname = \"l1\"\ninterface = \"sub0\"\nlink_address = \"2001:db8:1::1\"\n\
         subscriber_prefixes = [\"2001:db8::/32\", \"fd00:1::/48\"]\n",
    )
    .expect("a /32 and a ULA are subscriber space");
    assert_eq!(c.links[0].subscriber_prefixes.len(), 2);
    assert_eq!(c.trigger.nft_path, Path::new("/usr/sbin/nft"));
    let c = Config::parse(
        "[trigger]\nnft_path = \"/opt/nft/bin/nft\"\n[[servers]]\naddress = \"2001:db8::1\"\n",
    )
    .unwrap();
    assert_eq!(c.trigger.nft_path, Path::new("/opt/nft/bin/nft"));
}
