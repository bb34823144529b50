//! The config: the embedded default and valid files; every error with its line and field.

mod common;

use std::time::Duration;

use radguard_dicom::Operation;
use radguard_policy::*;

use common::*;

// ------------------------------------------------------------------------------------------
// Config: the embedded default and valid files.

#[test]
fn embedded_default_is_as_documented() {
    let c = Config::embedded_default();
    assert_eq!(c.server, ServerSettings::default());
    assert_eq!(
        c.server.listen,
        vec!["127.0.0.1:11112".parse().expect("addr")]
    );
    assert_eq!(c.server.ae_title.as_str(), "RADGUARD");
    assert_eq!(c.server.max_associations, 64);
    assert_eq!(c.server.max_associations_per_peer, 16);
    assert_eq!(c.server.max_pdu_length, 65536);
    assert_eq!(c.server.artim_timeout, Duration::from_secs(10));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.server.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));

    let routes = c.policy.routes();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].called_ae.as_str(), "RADGUARD");
    assert_eq!(routes[0].route, Route::Vault);

    let peers: Vec<&Peer> = c.policy.peers().collect();
    assert_eq!(peers.len(), 1);
    let p = peers[0];
    assert_eq!(p.name(), "loopback");
    assert_eq!(p.ae_titles(), &AeTitles::Any);
    let nets: Vec<String> = p.addresses().iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(
        p.allowed().iter().copied().collect::<Vec<_>>(),
        [Operation::Echo, Operation::Store]
    );
    let set = p.store_sop_classes().expect("store classes");
    assert!(set.any_storage());
    assert!(set.uids().is_empty());
    assert!(p.move_destinations().is_none());

    // And it behaves as promised.
    let adm = c
        .policy
        .admit(&facts("127.0.0.2", "ANYTHING", "RADGUARD"))
        .expect("loopback admitted");
    assert_eq!(c.policy.context(&adm, CT), ContextDecision::Accept);
    assert_eq!(
        c.policy.context(&adm, STUDY_FIND),
        ContextDecision::Reject(RejectWhy::OperationNotAllowed(Operation::Find))
    );
    assert!(c.policy.admit(&facts("::1", "X", "RADGUARD")).is_ok());
    assert!(c
        .policy
        .admit(&facts("::ffff:127.0.0.1", "X", "RADGUARD"))
        .is_ok());
    assert!(c.policy.admit(&facts("10.0.0.1", "X", "RADGUARD")).is_err());
    assert!(c.policy.admit(&facts("127.0.0.1", "X", "PACS")).is_err());
}

#[test]
fn server_table_is_optional_and_keys_default() {
    let c = parse_ok(&with_routes(VAULT_ROUTE));
    assert_eq!(c.server, ServerSettings::default());
    let c = parse_ok(&format!(
        "[server]\nidle_timeout_secs = 5\n{}",
        with_routes(VAULT_ROUTE)
    ));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(5));
    assert_eq!(c.server.artim_timeout, Duration::from_secs(10));
}

#[test]
fn full_server_table() {
    let src = format!(
        "[server]\nlisten = [\"127.0.0.1:0\", \"[::1]:11112\"]\nae_title = \"GW\"\nmax_associations = 100000\nmax_associations_per_peer = 100000\nmax_pdu_length = 4194304\nartim_timeout_secs = 600\nidle_timeout_secs = 86400\nconnect_timeout_secs = 1\nshutdown_grace_secs = 0\n{}",
        with_routes(VAULT_ROUTE)
    );
    let s = parse_ok(&src).server;
    assert_eq!(s.listen.len(), 2);
    assert_eq!(s.listen[1], "[::1]:11112".parse().expect("addr"));
    assert_eq!(s.ae_title.as_str(), "GW");
    assert_eq!(s.max_associations, 100_000);
    assert_eq!(s.max_associations_per_peer, 100_000);
    assert_eq!(s.max_pdu_length, 4_194_304);
    assert_eq!(s.artim_timeout, Duration::from_secs(600));
    assert_eq!(s.idle_timeout, Duration::from_secs(86_400));
    assert_eq!(s.connect_timeout, Duration::from_secs(1));
    assert_eq!(s.shutdown_grace, Duration::ZERO);
}

/// The example block of docs/config.md, verbatim.
const DOCS_EXAMPLE: &str = r#"[server]
listen = ["127.0.0.1:11112"]        # socket addresses; "127.0.0.1:0" = any free port (tests)
ae_title = "RADGUARD"                # the gateway's own AE title (vault SCP, answers it gives)
max_associations = 64                # global cap on concurrent associations (1..=100000)
max_associations_per_peer = 16       # per source address cap (1..=max_associations)
max_connections = 256                # open connections, negotiating or associated (max_associations..=400000; default 4 x max_associations)
max_pdu_length = 65536               # the gateway's own cap on PDU length, bytes (4096..=4194304)
artim_timeout_secs = 10              # ARTIM: time for the A-ASSOCIATE-RQ / for the peer to close (1..=600)
idle_timeout_secs = 300              # no PDU in either direction for this long -> A-ABORT (1..=86400)
connect_timeout_secs = 10            # TCP connect + A-ASSOCIATE-AC from the upstream (1..=600)
shutdown_grace_secs = 30             # SIGTERM: how long running associations may finish (0..=3600)

[[peer]]
name = "ct-scanner"                  # unique, [A-Za-z0-9_.-]{1,64}
ae_titles = ["CT01", "CT01B"]        # calling AE titles this peer uses (>=1)
addresses = ["127.0.0.1/32", "::1"]  # CIDRs or bare addresses the peer connects from (>=1)
allow = ["echo", "store", "find", "move", "get"]
store_sop_classes = ["CTImageStorage", "1.2.840.10008.5.1.4.1.1.4", "*"]
                                     # keyword (dicom-dictionary-std SOP class keyword), UID, or "*"
                                     # (= every Storage SOP class). Required when allow has store
                                     # or get; an error otherwise.
move_destinations = ["WS01"]         # AE titles a C-MOVE may name; required when allow has move

[[route]]
called_ae = "PACS"                   # the called AE a client uses; unique across routes
upstream = "127.0.0.1:4242"          # host:port of the real destination ...
upstream_ae = "ORTHANC"              # ... and its AE title (the called AE sent upstream)
# upstream_calling_ae = "RADGUARD"   # optional: calling AE sent upstream (default: the client's)

[[route]]
called_ae = "RADGUARD"
vault = true                         # the built-in vault is the destination (no upstream keys)
"#;

#[test]
fn docs_example_is_valid() {
    let c = parse_ok(DOCS_EXAMPLE);
    let p = c.policy.peers().next().expect("peer");
    assert_eq!(p.name(), "ct-scanner");
    assert_eq!(
        p.ae_titles(),
        &AeTitles::Listed(vec![ae("CT01"), ae("CT01B")])
    );
    let set = p.store_sop_classes().expect("classes");
    assert!(set.any_storage());
    assert_eq!(
        set.uids().iter().map(String::as_str).collect::<Vec<_>>(),
        ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"]
    );
    assert_eq!(
        c.policy.route_for(&ae("PACS")),
        Some(&Route::Upstream {
            addr: "127.0.0.1:4242".into(),
            upstream_ae: ae("ORTHANC"),
            upstream_calling_ae: None,
        })
    );
    assert_eq!(c.policy.route_for(&ae("RADGUARD")), Some(&Route::Vault));
    assert_eq!(c.policy.route_for(&ae("OTHER")), None);
}

#[test]
fn describe_names_listeners_routes_and_peers() {
    let text = parse_ok(FULL).describe();
    for needle in [
        "listen: 127.0.0.1:0, [::1]:0",
        "gateway AE title: RADGUARD",
        "PACS -> upstream ORTHANC at 127.0.0.1:4242, calling AE = the client's",
        "ARCHIVE -> upstream ARCH at archive.example.org:104, calling AE RADGUARD",
        "RADGUARD -> vault",
        "ct-scanner:",
        "calling AE: CT01, CT01B",
        "from: 10.1.0.0/16, fd00:1::/64",
        "allow: echo, store",
        "store/get SOP classes: CTImageStorage, MRImageStorage",
        "move destinations: WS01",
        "calling AE: any AE title",
        "store/get SOP classes: any Storage SOP class, 1.2.3.4.5.6",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(Config::embedded_default().describe().contains("loopback:"));
}

// ------------------------------------------------------------------------------------------
// Config errors: each with its line and field.

#[test]
fn syntax_error_has_line() {
    let src = "[server]\nae_title = \"X\"\nlisten = [\"127.0.0.1:1\"\n";
    let errs = parse_err(src);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, Some(3));
}

#[test]
fn unknown_keys_are_errors() {
    let src = format!(
        "{}\nbogus = 1\n",
        with_peer("ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]")
    );
    // `bogus` lands in the [[route]] table (the last one opened).
    one_err(&src, "bogus", "route[0].bogus", "unknown field `bogus`");

    let src = format!("[peer]\nname = 1\n{VAULT_ROUTE}");
    assert_eq!(parse_err(&src).len(), 1);

    let src = format!("[sever]\nae_title = \"X\"\n{}", with_routes(VAULT_ROUTE));
    one_err(&src, "[sever]", "sever", "unknown field `sever`");

    let src = format!("[server]\nlisten_on = []\n{}", with_routes(VAULT_ROUTE));
    one_err(&src, "listen_on", "server.listen_on", "unknown field");

    let src = with_peer("ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]\nstore_classes = [\"*\"]");
    one_err(
        &src,
        "store_classes",
        "peer[0].store_classes",
        "unknown field",
    );
}

#[test]
fn wrong_types_name_the_field() {
    let src = format!(
        "[server]\nmax_associations = \"many\"\n{}",
        with_routes(VAULT_ROUTE)
    );
    one_err(&src, "\"many\"", "server.max_associations", "invalid type");

    let src = with_peer("ae_titles = \"A\"\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]");
    one_err(&src, "\"A\"", "peer[0].ae_titles", "invalid type");

    let src = with_peer("ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\", 7]\nallow = [\"echo\"]");
    one_err(&src, ", 7", "peer[0].addresses[1]", "invalid type");

    let src = with_routes("[[route]]\ncalled_ae = \"X\"\nvault = \"yes\"\n");
    one_err(&src, "\"yes\"", "route[0].vault", "invalid type");
}

#[test]
fn display_is_file_line_col_field_message() {
    let src = "[[peer]]\nname = \"a\"\nae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]\n\n[[peer]]\nname = \"b\"\nae_titles = [\"B\"]\naddresses = [\"10.0.0.300/8\"]\nallow = [\"echo\"]\n\n[[route]]\ncalled_ae = \"R\"\nvault = true\n";
    let e = parse_config(src, "/etc/radguard.toml").expect_err("bad CIDR");
    assert_eq!(
        e.to_string(),
        "/etc/radguard.toml:10:14: field `peer[1].addresses[0]`: invalid CIDR \"10.0.0.300/8\""
    );
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().starts_with("/etc/radguard.toml:10:14"));
}

#[test]
fn all_semantic_errors_are_collected_in_file_order() {
    let src = r#"[server]
ae_title = "*"
max_associations = 0

[[peer]]
name = "a"
ae_titles = ["A", "*"]
addresses = ["10.0.0.300/8"]
allow = ["echo", "write"]

[[peer]]
name = "a"
ae_titles = ["B"]
addresses = ["10.0.0.1"]
allow = ["store"]

[[route]]
called_ae = "R"

[[route]]
called_ae = "R"
vault = true
"#;
    let errs = parse_err(src);
    let got: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(2), "server.ae_title"),
            (Some(3), "server.max_associations"),
            (Some(7), "peer[0].ae_titles[1]"),
            (Some(8), "peer[0].addresses[0]"),
            (Some(9), "peer[0].allow[1]"),
            (Some(11), "peer[1].store_sop_classes"),
            (Some(12), "peer[1].name"),
            (Some(17), "route[0]"),
            (Some(21), "route[1].called_ae"),
        ],
        "{errs:#?}"
    );
    // Display: one line per error.
    let text = ConfigErrors { errors: errs }.to_string();
    assert_eq!(text.lines().count(), 9);
    assert!(text.lines().all(|l| l.starts_with("test.toml:")));
}

#[test]
fn duplicate_peer_names() {
    let src = format!(
        "{ECHO_PEER}\n[[peer]]\nname = \"p\"\nae_titles = [\"B\"]\naddresses = [\"10.0.0.2\"]\nallow = [\"echo\"]\n{VAULT_ROUTE}"
    );
    let errs = parse_err(&src);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field, "peer[1].name");
    assert_eq!(errs[0].line, Some(8));
    assert!(errs[0]
        .problem
        .contains("duplicate peer name \"p\" (also peer[0])"));
}

#[test]
fn bad_peer_names() {
    for bad in ["ct scanner", "", "é", &"x".repeat(65)] {
        let src = format!("[[peer]]\nname = {bad:?}\nae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]\n{VAULT_ROUTE}");
        one_err(&src, "name =", "peer[0].name", "invalid peer name");
    }
    let ok = "a-Z_0.9".to_string() + &"x".repeat(57);
    parse_ok(&format!("[[peer]]\nname = {ok:?}\nae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]\n{VAULT_ROUTE}"));
}

#[test]
fn missing_required_peer_keys() {
    let src = format!("[[peer]]\nname = \"p\"\n{VAULT_ROUTE}");
    let errs = parse_err(&src);
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["peer[0].ae_titles", "peer[0].addresses", "peer[0].allow"]
    );
    assert!(errs
        .iter()
        .all(|e| e.line == Some(1) && e.problem.contains("missing required key")));

    let src = format!("[[peer]]\nae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]\n{VAULT_ROUTE}");
    one_err(
        &src,
        "[[peer]]",
        "peer[0].name",
        "missing required key `name`",
    );
}

#[test]
fn empty_lists() {
    one_err(
        &with_peer("ae_titles = []\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]"),
        "ae_titles",
        "peer[0].ae_titles",
        "at least one",
    );
    one_err(
        &with_peer("ae_titles = [\"A\"]\naddresses = []\nallow = [\"echo\"]"),
        "addresses",
        "peer[0].addresses",
        "at least one",
    );
    one_err(
        &with_peer("ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = []"),
        "allow",
        "peer[0].allow",
        "at least one",
    );
    one_err(
        &with_peer("ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"store\"]\nstore_sop_classes = []"),
        "store_sop_classes",
        "peer[0].store_sop_classes",
        "at least one",
    );
    one_err(
        &with_peer("ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"move\"]\nmove_destinations = []"),
        "move_destinations",
        "peer[0].move_destinations",
        "at least one",
    );
    let src = format!("[server]\nlisten = []\n{}", with_routes(VAULT_ROUTE));
    one_err(&src, "listen", "server.listen", "at least one");
}

#[test]
fn ae_title_errors() {
    let peer = |titles: &str| {
        with_peer(&format!(
            "ae_titles = {titles}\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]"
        ))
    };
    one_err(
        &peer("[\"A\", \"ABCDEFGHIJKLMNOPQ\"]"),
        "ae_titles",
        "peer[0].ae_titles[1]",
        "longer than 16",
    );
    one_err(
        &peer("[\"A\\\\B\"]"),
        "ae_titles",
        "peer[0].ae_titles[0]",
        "invalid AE title",
    );
    one_err(
        &peer("[\"  \"]"),
        "ae_titles",
        "peer[0].ae_titles[0]",
        "empty",
    );
    one_err(
        &peer("[\"A\", \"A \"]"),
        "ae_titles",
        "peer[0].ae_titles[1]",
        "duplicate AE title \"A\"",
    );
    // "*" only alone.
    one_err(
        &peer("[\"A\", \"*\"]"),
        "ae_titles",
        "peer[0].ae_titles[1]",
        "only entry",
    );
    let errs = parse_err(&peer("[\"*\", \"*\"]"));
    assert_eq!(errs.len(), 2);
    assert_eq!(
        parse_ok(&peer("[\"*\"]"))
            .policy
            .peers()
            .next()
            .map(|p| p.ae_titles().clone()),
        Some(AeTitles::Any)
    );

    // Server AE and route AEs must be specific.
    let src = format!("[server]\nae_title = \"*\"\n{}", with_routes(VAULT_ROUTE));
    one_err(
        &src,
        "ae_title",
        "server.ae_title",
        "\"*\" is not allowed here",
    );
    let src = format!(
        "[server]\nae_title = \"ABCDEFGHIJKLMNOPQRS\"\n{}",
        with_routes(VAULT_ROUTE)
    );
    one_err(&src, "ae_title", "server.ae_title", "invalid AE title");
    let src = with_routes("[[route]]\ncalled_ae = \"*\"\nvault = true\n");
    one_err(
        &src,
        "called_ae",
        "route[0].called_ae",
        "\"*\" is not allowed here",
    );
    let src =
        with_routes("[[route]]\ncalled_ae = \"R\"\nupstream = \"h:1\"\nupstream_ae = \"*\"\n");
    one_err(
        &src,
        "upstream_ae",
        "route[0].upstream_ae",
        "\"*\" is not allowed here",
    );
    let src = with_routes("[[route]]\ncalled_ae = \"R\"\nupstream = \"h:1\"\nupstream_ae = \"U\"\nupstream_calling_ae = \"\"\n");
    one_err(
        &src,
        "upstream_calling_ae",
        "route[0].upstream_calling_ae",
        "empty",
    );
}

#[test]
fn address_errors() {
    let peer = |addrs: &str| {
        with_peer(&format!(
            "ae_titles = [\"A\"]\naddresses = {addrs}\nallow = [\"echo\"]"
        ))
    };
    one_err(
        &peer("[\"10.0.0.300/8\"]"),
        "addresses",
        "peer[0].addresses[0]",
        "invalid CIDR \"10.0.0.300/8\"",
    );
    one_err(
        &peer("[\"10.0.0.0/33\"]"),
        "addresses",
        "peer[0].addresses[0]",
        "invalid CIDR",
    );
    one_err(
        &peer("[\"10.0.0.1/8\"]"),
        "addresses",
        "peer[0].addresses[0]",
        "host bits set (did you mean \"10.0.0.0/8\"?)",
    );
    one_err(
        &peer("[\"fd00::1/64\"]"),
        "addresses",
        "peer[0].addresses[0]",
        "host bits set",
    );
    one_err(
        &peer("[\"10.0.0.1\", \"localhost\"]"),
        "addresses",
        "peer[0].addresses[1]",
        "invalid address \"localhost\"",
    );
    one_err(
        &peer("[\"10.0.0.1\", \"10.0.0.1/32\"]"),
        "addresses",
        "peer[0].addresses[1]",
        "duplicate address",
    );
    let c = parse_ok(&peer("[\"10.0.0.1\", \"fd00::/8\", \"::1\"]"));
    let nets: Vec<String> = c
        .policy
        .peers()
        .flat_map(|p| p.addresses().iter().map(ToString::to_string))
        .collect();
    assert_eq!(nets, ["10.0.0.1/32", "fd00::/8", "::1/128"]);
}

#[test]
fn allow_errors() {
    let peer = |allow: &str| {
        with_peer(&format!(
            "ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = {allow}"
        ))
    };
    one_err(
        &peer("[\"echo\", \"write\"]"),
        "allow",
        "peer[0].allow[1]",
        "unknown operation \"write\"",
    );
    one_err(
        &peer("[\"Echo\"]"),
        "allow",
        "peer[0].allow[0]",
        "unknown operation",
    );
    one_err(
        &peer("[\"echo\", \"echo\"]"),
        "allow",
        "peer[0].allow[1]",
        "duplicate operation \"echo\"",
    );
}

#[test]
fn conditional_keys() {
    let base = "ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\n";
    let p = |rest: &str| with_peer(&format!("{base}{rest}"));
    one_err(
        &p("allow = [\"store\"]"),
        "[[peer]]",
        "peer[0].store_sop_classes",
        "required when allow has \"store\" or \"get\"",
    );
    one_err(
        &p("allow = [\"get\"]"),
        "[[peer]]",
        "peer[0].store_sop_classes",
        "required",
    );
    one_err(
        &p("allow = [\"echo\"]\nstore_sop_classes = [\"*\"]"),
        "store_sop_classes",
        "peer[0].store_sop_classes",
        "only allowed when",
    );
    one_err(
        &p("allow = [\"move\"]"),
        "[[peer]]",
        "peer[0].move_destinations",
        "required when allow has \"move\"",
    );
    one_err(
        &p("allow = [\"echo\"]\nmove_destinations = [\"WS\"]"),
        "move_destinations",
        "peer[0].move_destinations",
        "only allowed when",
    );
    one_err(
        &p("allow = [\"move\"]\nmove_destinations = [\"WS\", \"*\"]"),
        "move_destinations",
        "peer[0].move_destinations[1]",
        "only entry",
    );
    one_err(
        &p("allow = [\"move\"]\nmove_destinations = [\"THIS-IS-WAY-TOO-LONG\"]"),
        "move_destinations",
        "peer[0].move_destinations[0]",
        "invalid AE title",
    );
    parse_ok(&p(
        "allow = [\"get\"]\nstore_sop_classes = [\"CTImageStorage\"]",
    ));
    parse_ok(&p("allow = [\"move\"]\nmove_destinations = [\"*\"]"));
}

#[test]
fn sop_class_errors() {
    let p = |classes: &str| {
        with_peer(&format!(
            "ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"store\"]\nstore_sop_classes = {classes}"
        ))
    };
    let f = "peer[0].store_sop_classes";
    one_err(
        &p("[\"CTImageStorage\", \"CtImageStorage\"]"),
        "store_sop",
        &format!("{f}[1]"),
        "unknown SOP class keyword \"CtImageStorage\"",
    );
    one_err(
        &p("[\"Verification\"]"),
        "store_sop",
        &format!("{f}[0]"),
        "Verification (1.2.840.10008.1.1) is not a Storage SOP class",
    );
    one_err(
        &p("[\"1.2.840.10008.5.1.4.1.2.2.1\"]"),
        "store_sop",
        &format!("{f}[0]"),
        "is not a Storage SOP class",
    );
    one_err(
        &p("[\"1.2.840.10008.1.20.1\"]"),
        "store_sop",
        &format!("{f}[0]"),
        "is not a Storage SOP class",
    );
    one_err(
        &p("[\"1.02.3\"]"),
        "store_sop",
        &format!("{f}[0]"),
        "invalid UID \"1.02.3\"",
    );
    one_err(
        &p("[\"1..3\"]"),
        "store_sop",
        &format!("{f}[0]"),
        "invalid UID",
    );
    one_err(
        &p("[\"CTImageStorage\", \"1.2.840.10008.5.1.4.1.1.2\"]"),
        "store_sop",
        &format!("{f}[1]"),
        "listed twice",
    );
    one_err(
        &p("[\"*\", \"*\"]"),
        "store_sop",
        &format!("{f}[1]"),
        "duplicate \"*\"",
    );
    // Private (unknown) UIDs may be listed explicitly.
    let c = parse_ok(&p("[\"1.2.3.4.5.6\", \"MRImageStorage\", \"*\"]"));
    let set = c
        .policy
        .peers()
        .next()
        .and_then(|p| p.store_sop_classes().cloned())
        .expect("set");
    assert!(set.any_storage());
    assert!(set.uids().contains("1.2.3.4.5.6"));
    assert!(set.uids().contains("1.2.840.10008.5.1.4.1.1.4"));
}

#[test]
fn overlapping_peers_are_ambiguous() {
    let two = |a: &str, b: &str| {
        format!(
            "[[peer]]\nname = \"a\"\n{a}\nallow = [\"echo\"]\n\n[[peer]]\nname = \"b\"\n{b}\nallow = [\"echo\"]\n{VAULT_ROUTE}"
        )
    };
    let src = two(
        "ae_titles = [\"X\", \"CT\"]\naddresses = [\"10.0.0.0/8\"]",
        "ae_titles = [\"CT\"]\naddresses = [\"10.1.0.0/16\"]",
    );
    one_err(&src, "name = \"b\"", "peer[1]", "overlaps peer \"a\"");
    let src = two(
        "ae_titles = [\"*\"]\naddresses = [\"::/0\"]",
        "ae_titles = [\"CT\"]\naddresses = [\"::1\"]",
    );
    one_err(&src, "name = \"b\"", "peer[1]", "overlaps");
    // Same AE, disjoint addresses; or same addresses, different AEs: fine.
    parse_ok(&two(
        "ae_titles = [\"CT\"]\naddresses = [\"10.0.0.0/8\"]",
        "ae_titles = [\"CT\"]\naddresses = [\"11.0.0.0/8\", \"::1\"]",
    ));
    parse_ok(&two(
        "ae_titles = [\"CT\"]\naddresses = [\"10.0.0.0/8\"]",
        "ae_titles = [\"MR\"]\naddresses = [\"10.0.0.0/8\"]",
    ));
}

#[test]
fn route_errors() {
    let dup = "[[route]]\ncalled_ae = \"R\"\nvault = true\n\n[[route]]\ncalled_ae = \"R\"\nupstream = \"h:1\"\nupstream_ae = \"U\"\n";
    let errs = parse_err(&with_routes(dup));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field, "route[1].called_ae");
    assert!(errs[0]
        .problem
        .contains("duplicate called AE \"R\" (also route[0])"));

    let both = with_routes(
        "[[route]]\ncalled_ae = \"R\"\nvault = true\nupstream = \"h:1\"\nupstream_ae = \"U\"\n",
    );
    one_err(&both, "upstream =", "route[0]", "not both");
    let both =
        with_routes("[[route]]\ncalled_ae = \"R\"\nvault = true\nupstream_calling_ae = \"C\"\n");
    one_err(&both, "upstream_calling_ae", "route[0]", "not both");

    let neither = with_routes("[[route]]\ncalled_ae = \"R\"\n");
    one_err(&neither, "[[route]]", "route[0]", "needs a destination");
    let neither = with_routes("[[route]]\ncalled_ae = \"R\"\nvault = false\n");
    one_err(&neither, "[[route]]", "route[0]", "needs a destination");

    let half = with_routes("[[route]]\ncalled_ae = \"R\"\nupstream = \"h:1\"\n");
    one_err(&half, "[[route]]", "route[0].upstream_ae", "missing");
    let half = with_routes("[[route]]\ncalled_ae = \"R\"\nupstream_ae = \"U\"\n");
    one_err(&half, "[[route]]", "route[0].upstream", "missing");
    let no_called = with_routes("[[route]]\nvault = true\n");
    one_err(
        &no_called,
        "[[route]]",
        "route[0].called_ae",
        "missing required key `called_ae`",
    );

    // vault = false + upstream is an upstream route.
    let c = parse_ok(&with_routes("[[route]]\ncalled_ae = \"R\"\nvault = false\nupstream = \"h:1\"\nupstream_ae = \"U\"\nupstream_calling_ae = \"GW\"\n"));
    assert_eq!(
        c.policy.route_for(&ae("R")),
        Some(&Route::Upstream {
            addr: "h:1".into(),
            upstream_ae: ae("U"),
            upstream_calling_ae: Some(ae("GW")),
        })
    );
}

#[test]
fn upstream_must_be_host_port() {
    let route = |up: &str| {
        with_routes(&format!(
            "[[route]]\ncalled_ae = \"R\"\nupstream = {up:?}\nupstream_ae = \"U\"\n"
        ))
    };
    for bad in [
        "pacs",
        "pacs:",
        "pacs:0",
        "pacs:65536",
        "pacs:x",
        ":104",
        "::1:104",
        "[::1:104",
        "[nothost]:104",
        "bad_host:104",
        "-pacs:104",
        "pacs..example:104",
        "http://pacs:104",
    ] {
        one_err(
            &route(bad),
            "upstream =",
            "route[0].upstream",
            "invalid upstream",
        );
    }
    for good in [
        "pacs:104",
        "10.0.0.5:104",
        "[::1]:104",
        "[fd00::5]:11112",
        "pacs.example.org:65535",
    ] {
        parse_ok(&route(good));
    }
}

#[test]
fn listen_errors() {
    let server =
        |listen: &str| format!("[server]\nlisten = {listen}\n{}", with_routes(VAULT_ROUTE));
    one_err(
        &server("[\"localhost:11112\"]"),
        "listen",
        "server.listen[0]",
        "invalid socket address",
    );
    one_err(
        &server("[\"127.0.0.1\"]"),
        "listen",
        "server.listen[0]",
        "invalid socket address",
    );
    one_err(
        &server("[\"::1:104\"]"),
        "listen",
        "server.listen[0]",
        "invalid socket address",
    );
    one_err(
        &server("[\"127.0.0.1:1\", \"127.0.0.1:1\"]"),
        "listen",
        "server.listen[1]",
        "duplicate",
    );
}

#[test]
fn numbers_out_of_range() {
    let server = |kv: &str| format!("[server]\n{kv}\n{}", with_routes(VAULT_ROUTE));
    let cases = [
        (
            "max_associations = 0",
            "server.max_associations",
            "1..=100000",
        ),
        (
            "max_associations = 100001",
            "server.max_associations",
            "out of range",
        ),
        (
            "max_associations = -5",
            "server.max_associations",
            "-5 is out of range",
        ),
        (
            "max_pdu_length = 4095",
            "server.max_pdu_length",
            "4096..=4194304",
        ),
        (
            "max_pdu_length = 4194305",
            "server.max_pdu_length",
            "out of range",
        ),
        (
            "artim_timeout_secs = 0",
            "server.artim_timeout_secs",
            "1..=600",
        ),
        (
            "artim_timeout_secs = 601",
            "server.artim_timeout_secs",
            "out of range",
        ),
        (
            "idle_timeout_secs = 86401",
            "server.idle_timeout_secs",
            "1..=86400",
        ),
        (
            "connect_timeout_secs = 0",
            "server.connect_timeout_secs",
            "1..=600",
        ),
        (
            "shutdown_grace_secs = -1",
            "server.shutdown_grace_secs",
            "0..=3600",
        ),
        (
            "shutdown_grace_secs = 3601",
            "server.shutdown_grace_secs",
            "out of range",
        ),
        (
            "max_associations_per_peer = 0",
            "server.max_associations_per_peer",
            "1..=64",
        ),
        (
            "max_associations_per_peer = 65",
            "server.max_associations_per_peer",
            "1..=64",
        ),
    ];
    for (kv, field, msg) in cases {
        let key = kv.split(' ').next().unwrap_or(kv);
        one_err(&server(kv), key, field, msg);
    }
    // The per-peer cap follows the global one.
    one_err(
        &server("max_associations = 4\nmax_associations_per_peer = 5"),
        "max_associations_per_peer",
        "server.max_associations_per_peer",
        "1..=4",
    );
    let s = parse_ok(&server("max_associations = 4")).server;
    assert_eq!(
        s.max_associations_per_peer, 4,
        "default per-peer cap is clamped to the global cap"
    );
    let s = parse_ok(&server(
        "max_associations = 4\nmax_associations_per_peer = 4",
    ))
    .server;
    assert_eq!(s.max_associations_per_peer, 4);
}

#[test]
fn connection_cap_defaults_to_four_associations_each_and_is_at_least_the_association_cap() {
    let server = |kv: &str| format!("[server]\n{kv}\n{}", with_routes(VAULT_ROUTE));
    assert_eq!(parse_ok(&server("")).server.max_connections, 256);
    assert_eq!(
        parse_ok(&server("max_associations = 10"))
            .server
            .max_connections,
        40
    );
    let s = parse_ok(&server("max_associations = 10\nmax_connections = 10")).server;
    assert_eq!((s.max_associations, s.max_connections), (10, 10));
    let s = parse_ok(&server("max_connections = 5000")).server;
    assert_eq!(s.max_connections, 5000);
    one_err(
        &server("max_associations = 10\nmax_connections = 9"),
        "max_connections",
        "server.max_connections",
        "10..=400000",
    );
    one_err(
        &server("max_connections = 400001"),
        "max_connections",
        "server.max_connections",
        "64..=400000",
    );
}

#[test]
fn empty_policy_is_an_error_without_a_line() {
    let errs = parse_err("");
    let got: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.field.as_str(), e.line)).collect();
    assert_eq!(got, [("peer", None), ("route", None)]);
    assert_eq!(
        ConfigErrors { errors: errs }.to_string().lines().next(),
        Some("test.toml: field `peer`: no [[peer]]: at least one peer is required (otherwise every association is refused)")
    );
}

#[test]
fn load_file_reports_unreadable_files() {
    let e = load_file(std::path::Path::new("/nonexistent/radguard.toml")).expect_err("missing");
    assert_eq!(e.len(), 1);
    assert_eq!(e.errors[0].line, None);
    assert_eq!(e.errors[0].file, "/nonexistent/radguard.toml");
    assert!(e
        .to_string()
        .starts_with("/nonexistent/radguard.toml: cannot read config file"));
}

// ------------------------------------------------------------------------------------------
// Hold routes: `on_upstream_down` and the `hold_*` keys.

const UP: &str =
    "[[route]]\ncalled_ae = \"PACS\"\nupstream = \"127.0.0.1:4242\"\nupstream_ae = \"ORTHANC\"\n";

#[test]
fn hold_route_defaults_and_values() {
    let c = parse_ok(&with_routes(UP));
    assert_eq!(c.policy.routes()[0].hold, None, "refuse is the default");
    let c = parse_ok(&with_routes(&format!(
        "{UP}on_upstream_down = \"refuse\"\n"
    )));
    assert_eq!(c.policy.routes()[0].hold, None);

    let c = parse_ok(&with_routes(&format!("{UP}on_upstream_down = \"hold\"\n")));
    assert_eq!(
        c.policy.routes()[0].hold,
        Some(HoldSettings {
            quota: 10_000,
            high_water_percent: 90,
            backoff_base: Duration::from_millis(1000),
            backoff_cap: Duration::from_millis(300_000),
            max_age: Duration::from_secs(3600),
            max_attempts: 5,
        })
    );
    let c = parse_ok(&with_routes(&format!(
        "{UP}on_upstream_down = \"hold\"\nhold_quota = 5\nhold_high_water_percent = 80\nhold_backoff_base_ms = 200\nhold_backoff_cap_ms = 1000\nhold_max_age_secs = 60\nhold_max_attempts = 2\n"
    )));
    let h = c.policy.routes()[0].hold.expect("hold");
    assert_eq!(h.quota, 5);
    assert_eq!(h.high_water_percent, 80);
    assert_eq!(h.backoff_base, Duration::from_millis(200));
    assert_eq!(h.backoff_cap, Duration::from_millis(1000));
    assert_eq!(h.max_age, Duration::from_secs(60));
    assert_eq!(h.max_attempts, 2);
}

#[test]
fn hold_route_errors_name_line_and_key() {
    let src = with_routes(&format!("{UP}on_upstream_down = \"queue\"\n"));
    one_err(
        &src,
        "on_upstream_down",
        "route[0].on_upstream_down",
        "expected \"refuse\" or \"hold\"",
    );
    let src = with_routes(&format!("{UP}hold_quota = 5\n"));
    one_err(
        &src,
        "hold_quota",
        "route[0].hold_quota",
        "only with `on_upstream_down = \"hold\"`",
    );
    let src = with_routes(&format!(
        "{UP}on_upstream_down = \"hold\"\nhold_high_water_percent = 100\n"
    ));
    one_err(
        &src,
        "hold_high_water_percent",
        "route[0].hold_high_water_percent",
        "out of range",
    );
    let src = with_routes(&format!(
        "{UP}on_upstream_down = \"hold\"\nhold_backoff_base_ms = 5000\nhold_backoff_cap_ms = 1000\n"
    ));
    one_err(
        &src,
        "hold_backoff_cap_ms",
        "route[0].hold_backoff_cap_ms",
        "below hold_backoff_base_ms",
    );
    let src =
        with_routes("[[route]]\ncalled_ae = \"V\"\nvault = true\non_upstream_down = \"hold\"\n");
    one_err(
        &src,
        "on_upstream_down",
        "route[0].on_upstream_down",
        "only for upstream routes",
    );
}
