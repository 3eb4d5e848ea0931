//! Network copies: a flow network gets one copy per flow step, a `@per_member` network one
//! per training member, each with its own parameters under a checkpoint name that reads
//! like the spec, and the parameter count the plan prints.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::Device;
use common::to_f64;
use std::collections::BTreeSet;
use vic::lower::nets::{self, CopyKey};
use vic::lower::params::ParamStore;
use vic::rng::Rng;

fn program(spec: &str) -> vic::ir::Program {
    let path = format!("{}/specs/{spec}", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(path).unwrap();
    vic::driver::front_end(&src, &Default::default())
        .program
        .unwrap()
}

/// Build every network's copies into a fresh store; its parameter names and values.
fn built(
    program: &vic::ir::Program,
    members: Option<&[usize]>,
) -> (Vec<nets::NetCopies>, Vec<(String, Vec<f64>)>) {
    let store = ParamStore::seeded(0, &Device::Cpu);
    let copies = nets::build_all(program, &store, members, &mut Rng::seed(1)).unwrap();
    let mut named: Vec<(String, Vec<f64>)> = store
        .named()
        .into_iter()
        .map(|(n, v)| (n, to_f64(v.as_tensor())))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    (copies, named)
}

/// The copy prefixes (`ar.step1`, ...) of network `net` among checkpoint names.
fn prefixes(named: &[(String, Vec<f64>)], net: &str) -> BTreeSet<String> {
    named
        .iter()
        .filter(|(n, _)| n.starts_with(&format!("{net}.")))
        .filter_map(|(n, _)| n.split(".layer").next().map(str::to_string))
        .collect()
}

#[test]
fn each_flow_step_has_its_own_copy_of_the_made_network() {
    let p = program("iaf.vi");
    let plan = vic::plan::plan(&p);
    let (copies, named) = built(&p, None);
    let ar = p.nets.iter().position(|n| n.name == "ar").unwrap();
    let keys: Vec<CopyKey> = copies[ar].copies.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [1, 2].map(|s| CopyKey {
            member: None,
            step: Some(s)
        })
    );
    assert_eq!(
        prefixes(&named, "ar"),
        BTreeSet::from(["ar.step1".to_string(), "ar.step2".to_string()])
    );
    // The two copies start apart (each drew its own initialization).
    let w = |step: usize| {
        named
            .iter()
            .find(|(n, _)| *n == format!("ar.step{step}.layer0.weight"))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_ne!(w(1), w(2));
    // Every scalar the store holds is one the plan counts.
    let total: usize = named.iter().map(|(_, v)| v.len()).sum();
    assert_eq!(total as u64, plan.total_params);
    // Networks without copies keep their bare names.
    assert!(
        named.iter().any(|(n, _)| n == "enc.layer0.weight"),
        "{named:?}"
    );
}

#[test]
fn a_per_member_network_has_one_copy_per_training_member() {
    let p = program("metavae.vi");
    let plan = vic::plan::plan(&p);
    // rotate(-180:160:20) has 18 members; `train = even` keeps 0, 2, ..., 16.
    let members = vic::arch::training_members(&p).unwrap();
    assert_eq!(members, (0..18).step_by(2).collect::<Vec<_>>());
    let (copies, named) = built(&p, Some(&members));
    let dec = p.nets.iter().position(|n| n.name == "dec").unwrap();
    assert_eq!(copies[dec].copies.len(), 9);
    let want: BTreeSet<String> = members.iter().map(|m| format!("dec.member{m}")).collect();
    assert_eq!(prefixes(&named, "dec"), want);
    assert!(copies[dec]
        .get(CopyKey {
            member: Some(4),
            step: None
        })
        .is_some());
    assert!(copies[dec]
        .get(CopyKey {
            member: Some(3),
            step: None
        })
        .is_none());
    let total: usize = named.iter().map(|(_, v)| v.len()).sum();
    assert_eq!(total as u64, plan.total_params);
    assert!(plan.to_string().contains("9 training members"), "{plan}");
}

#[test]
fn members_known_only_from_the_data_must_be_given() {
    // `classes()`: the member count comes from the labels.
    let path = format!("{}/specs/metavae.vi", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(path)
        .unwrap()
        .replace("rotate(-180:160:20)", "classes()");
    let front = vic::driver::front_end(&src, &Default::default());
    let p = front
        .program
        .unwrap_or_else(|| panic!("{:?}", front.diagnostics));
    assert!(vic::arch::training_members(&p).is_none());
    let store = ParamStore::seeded(0, &Device::Cpu);
    let err = nets::build_all(&p, &store, None, &mut Rng::seed(1))
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("known only from the data")),
        "{err:?}"
    );
    let (_, named) = built(&p, Some(&[0, 1, 2, 3, 4, 5, 6]));
    assert!(named.iter().any(|(n, _)| n.contains(".member6.")));
}
