//! The crate's public helpers: model references and the descriptor set.

use camshaft_proto::{Error, FILE_DESCRIPTOR_SET, ModelRef, SERVICE_NAMES, VersionSelector};
use prost::Message;

#[test]
fn model_refs_parse_in_their_three_forms() {
    let cases = [
        ("pets", "pets", VersionSelector::Latest),
        ("pets@prod", "pets", VersionSelector::Alias("prod".into())),
        ("pets:12", "pets", VersionSelector::Version(12)),
        (
            "cifar10-resnet18_v2.1@canary-2",
            "cifar10-resnet18_v2.1",
            VersionSelector::Alias("canary-2".into()),
        ),
        ("9lives:1", "9lives", VersionSelector::Version(1)),
        (
            "m:18446744073709551615",
            "m",
            VersionSelector::Version(u64::MAX),
        ),
    ];
    for (text, name, selector) in cases {
        let r = ModelRef::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(r.name, name, "{text}");
        assert_eq!(r.selector, selector, "{text}");
        // Display is the canonical form and parses back to the same reference.
        assert_eq!(r.to_string(), text);
        assert_eq!(r.to_string().parse::<ModelRef>(), Ok(r));
    }
    assert_eq!(
        ModelRef::parse("pets").map(|r| r.alias().map(str::to_owned)),
        Ok(Some("latest".into()))
    );
    assert_eq!(
        ModelRef::parse("pets:3").map(|r| r.pinned_version()),
        Ok(Some(3))
    );
    assert_eq!(ModelRef::version("pets", 3).to_string(), "pets:3");
    assert_eq!(ModelRef::alias_of("pets", "prod").to_string(), "pets@prod");
}

#[test]
fn malformed_model_refs_are_refused_with_a_reason() {
    let cases = [
        ("", "model name: it is empty"),
        ("@prod", "model name: it is empty"),
        (":3", "model name: it is empty"),
        ("pets@", "alias: it is empty"),
        ("pets:", "the version after `:` is empty"),
        ("pets:0", "versions start at 1"),
        ("pets:-1", "is not a number"),
        (
            "pets:latest",
            "is not a number (use `name@alias` for an alias)",
        ),
        ("pets:1.5", "is not a number"),
        ("pets:99999999999999999999", "is too large"),
        ("pets@prod:3", "not both"),
        ("pets:3@prod", "not both"),
        ("pets@a@b", "'@' is not allowed"),
        ("pets@3", "an alias cannot be all digits"),
        ("my pets", "' ' is not allowed"),
        ("pets/v2", "'/' is not allowed"),
        ("-pets", "must start with a letter or digit"),
        ("chats_é", "'é' is not allowed"),
    ];
    for (text, reason) in cases {
        let err = Error::from(ModelRef::parse(text).expect_err(text));
        assert!(
            matches!(&err, Error::InvalidModelRef { reference, .. } if reference == text),
            "{text}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(reason),
            "{text}: {message:?} lacks {reason:?}"
        );
        // Every helper error is the caller's fault: INVALID_ARGUMENT on the wire.
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    let long = "a".repeat(camshaft_proto::MAX_NAME_LEN + 1);
    assert!(ModelRef::parse(&long).is_err());
    assert!(ModelRef::parse(&"a".repeat(camshaft_proto::MAX_NAME_LEN)).is_ok());
}

#[test]
fn descriptor_set_decodes_and_names_the_four_services() {
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("the build script wrote a valid descriptor set");
    let mut files: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    files.sort_unstable();
    assert_eq!(
        files,
        [
            "camshaft/v1/common.proto",
            "camshaft/v1/coordinator.proto",
            "camshaft/v1/explainer.proto",
            "camshaft/v1/worker.proto",
        ]
    );
    let mut services: Vec<String> = set
        .file
        .iter()
        .flat_map(|f| {
            f.service
                .iter()
                .map(move |s| format!("{}.{}", f.package(), s.name()))
        })
        .collect();
    services.sort_unstable();
    let mut expected = SERVICE_NAMES.map(String::from).to_vec();
    expected.sort_unstable();
    assert_eq!(services, expected);

    // The public Explainer contract keeps its method names and streaming shape.
    let explainer = set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "Explainer")
        .expect("Explainer is defined");
    let methods: Vec<(&str, bool, bool)> = explainer
        .method
        .iter()
        .map(|m| (m.name(), m.client_streaming(), m.server_streaming()))
        .collect();
    assert_eq!(
        methods,
        [("Explain", false, false), ("ExplainStream", true, true)]
    );
}

#[test]
fn reflection_services_build_for_v1_and_v1alpha() {
    camshaft_proto::reflection_v1().expect("v1 reflection over our descriptors");
    camshaft_proto::reflection_v1alpha().expect("v1alpha reflection over our descriptors");
}
