//! Criterion benches of the stages of one gateway request: token
//! verification, path normalization, policy decision, audit commit and
//! credential decryption. Run with `cargo bench -p castellan-bench`.

use std::hint::black_box;
use std::time::Duration;

use castellan_bench::audit::{self, TempStore, BATCH_SIZE, PREFILL_RECORDS};
use castellan_bench::paths::{REJECTED_PATHS, REQUEST_PATHS};
use castellan_bench::policy::{self, check_case, decision_cases, LOAD_TEST_SIZE};
use castellan_bench::secrets::Vault;
use castellan_bench::tokens::{unknown_token, TokenRejection, TokenTable};
use castellan_policy::AccessRequest;
use castellan_store::{now_ms, AuditRecord};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn token_verification(c: &mut Criterion) {
    let table = TokenTable::issue(policy::parse_config(&policy::config_text(LOAD_TEST_SIZE)));
    let valid = table.token(0).to_string();
    let unknown = unknown_token();
    assert!(table.verify(&valid).is_ok(), "the issued token must verify");
    assert_eq!(
        table.verify(unknown.expose()).err(),
        Some(TokenRejection::InvalidToken),
        "an unissued token must be rejected"
    );

    let mut group = c.benchmark_group("token_verification");
    group.bench_function("valid_of_1000", |b| {
        b.iter(|| table.verify(black_box(&valid)))
    });
    group.bench_function("unknown", |b| {
        b.iter(|| table.verify(black_box(unknown.expose())).is_err())
    });
    group.finish();
}

fn path_normalization(c: &mut Criterion) {
    let config = policy::parse_config(&policy::config_text(LOAD_TEST_SIZE));
    let connection = config.connections["conn-00"].clone();
    let mut folding = connection.clone();
    folding.case_insensitive_paths = true;
    for raw in REQUEST_PATHS {
        assert!(
            connection.normalize_path(raw).is_ok(),
            "{raw} must normalize"
        );
    }
    // Folding rejects escaped non-ASCII characters, so one path of the set
    // takes the rejection path there.
    let folded = REQUEST_PATHS
        .iter()
        .filter(|raw| folding.normalize_path(raw).is_ok())
        .count();
    assert_eq!(
        folded,
        REQUEST_PATHS.len() - 1,
        "all but one path must fold"
    );
    for raw in REJECTED_PATHS {
        assert!(
            connection.normalize_path(raw).is_err(),
            "{raw} must be rejected"
        );
    }

    let mut group = c.benchmark_group("normalize_path");
    group.bench_function("short", |b| {
        b.iter(|| connection.normalize_path(black_box("/v1/items/42/details")))
    });
    group.bench_function("escapes", |b| {
        b.iter(|| {
            connection.normalize_path(black_box("/v1/users/%7Ejay/files/report%2Dq4%2e2026.pdf"))
        })
    });
    group.throughput(Throughput::Elements(REQUEST_PATHS.len() as u64));
    group.bench_function("mixed_set", |b| {
        b.iter(|| {
            for raw in REQUEST_PATHS {
                let _ = black_box(connection.normalize_path(black_box(raw)));
            }
        })
    });
    group.bench_function("mixed_set_case_insensitive", |b| {
        b.iter(|| {
            for raw in REQUEST_PATHS {
                let _ = black_box(folding.normalize_path(black_box(raw)));
            }
        })
    });
    group.throughput(Throughput::Elements(REJECTED_PATHS.len() as u64));
    group.bench_function("rejected_set", |b| {
        b.iter(|| {
            for raw in REJECTED_PATHS {
                let _ = black_box(connection.normalize_path(black_box(raw)));
            }
        })
    });
    group.finish();
}

/// Times each decision case. A case that Cedar decides is timed twice: as
/// a hit, the same request repeated, and as a miss, a request whose path
/// the policy's decision cache has never seen. Misses continue past the
/// cache's bound, so they include the evictions of a full cache.
fn policy_decision(c: &mut Criterion) {
    let policy = policy::compile(LOAD_TEST_SIZE);
    let mut group = c.benchmark_group("policy_decision");
    let mut next_id = 1_000_000;
    for case in decision_cases() {
        check_case(&policy, &case);
        let request = case.request();
        if !case.cached {
            group.bench_function(case.label, |b| {
                b.iter(|| policy.authorize(black_box(&request)))
            });
            continue;
        }
        group.bench_function(format!("{}/hit", case.label), |b| {
            b.iter(|| policy.authorize(black_box(&request)))
        });
        let mut unseen_path = || {
            next_id += 1;
            case.path_variant(next_id)
        };
        group.bench_function(format!("{}/miss", case.label), |b| {
            b.iter_batched(
                &mut unseen_path,
                |path| {
                    let request = AccessRequest {
                        path: &path,
                        ..request
                    };
                    policy.authorize(black_box(&request))
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn audit_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("building the tokio runtime failed: {error}"));
    let temp = runtime.block_on(TempStore::create());
    let start_ms = now_ms();
    let mut next = 0;
    let mut next_batch = || {
        let batch = audit::records_from(next, BATCH_SIZE, start_ms);
        next += BATCH_SIZE;
        batch
    };
    let commit = |batch: &[AuditRecord]| {
        runtime
            .block_on(temp.store.insert_audit_batch(black_box(batch)))
            .unwrap_or_else(|error| panic!("committing the batch failed: {error}"))
    };
    for _ in 0..PREFILL_RECORDS / BATCH_SIZE {
        commit(&next_batch());
    }

    let mut group = c.benchmark_group("audit");
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH_SIZE as u64));
    // Each batch continues the stream, because a log that receives the same
    // times and request ids again grows its indexes in ways the gateway's
    // log never does.
    group.bench_function("insert_batch_512", |b| {
        b.iter_batched(
            &mut next_batch,
            |batch| commit(&batch),
            BatchSize::PerIteration,
        )
    });
    group.finish();
    runtime.block_on(temp.store.close());
}

fn secret_decryption(c: &mut Criterion) {
    let vault = Vault::generate(LOAD_TEST_SIZE.connections);
    let mut group = c.benchmark_group("secret");
    group.bench_function("open_cold", |b| {
        b.iter(|| vault.open_cold(black_box("conn-07")))
    });
    group.bench_function("lookup_warm", |b| {
        b.iter(|| {
            vault
                .lookup_warm(black_box("conn-07"))
                .map(|value| value.expose().len())
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = request_path;
    config = config();
    targets = token_verification, path_normalization, policy_decision, audit_commit,
        secret_decryption
}
criterion_main!(request_path);
