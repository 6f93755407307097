# Gatehouse developer tasks. Every target works on a fresh machine with only the Rust toolchain.
CARGO ?= cargo
CONFIG ?= gatehouse.example.toml

.PHONY: run test test-sqlite test-postgres chaos faults fuzz lint fmt bench deny doc clean-db

## run: start the server on SQLite (gatehouse.db) with the example configuration.
##      The admin API uses GATEHOUSE_ADMIN_TOKEN (a development token is set if you have none).
run:
	GATEHOUSE_ADMIN_TOKEN=$${GATEHOUSE_ADMIN_TOKEN:-dev-admin-token} \
	$(CARGO) run --bin gatehouse-server -- --config $(CONFIG)

## test: every test; the PostgreSQL suite runs too when TEST_DATABASE_URL is set.
test:
	$(CARGO) build --bins
	$(CARGO) test --workspace --exclude gatehouse-e2e
	@# The end-to-end tests start real servers; one at a time keeps their timing honest on 2 cores.
	$(CARGO) test -p gatehouse-e2e -- --test-threads=1

## test-postgres: the same suite with the local PostgreSQL as well.
test-postgres:
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test} $(MAKE) test

## faults: the long fault drill (more lifecycles at 5, 20 and 35 % injected faults, SQLite and, with
##         TEST_DATABASE_URL, PostgreSQL); prints faults injected by kind and the outcomes.
##         FAULTS_SEED and FAULTS_LIFECYCLES override the seed (12) and lifecycles per run (80).
faults:
	GATEHOUSE_FAULTS_LONG=1 GATEHOUSE_FAULTS_SEED=$${FAULTS_SEED:-12} \
	GATEHOUSE_FAULTS_LIFECYCLES=$${FAULTS_LIFECYCLES:-80} \
	$(CARGO) test -p gatehouse-runtime --test faults -- --nocapture

## chaos: the long crash and replica tests (docs/reliability.md): the release server, 1,000
##        lifecycles and at least 20 SIGKILLs per database (PostgreSQL too, and the replica test,
##        when TEST_DATABASE_URL is set). Prints a table of figures per run and writes them to
##        target/chaos/*.json. CHAOS_SEED=<n> replays a run's random choices. Then the long fault
##        drill (`make faults`). The short forms of both run in `make test`.
chaos:
	$(CARGO) build --release --bin gatehouse-server
	CHAOS_LONG=1 $(CARGO) test -p gatehouse-e2e --test chaos -- --include-ignored --nocapture --test-threads=1
	$(MAKE) faults

## lint: formatting and clippy, warnings are errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

fmt:
	$(CARGO) fmt --all

## bench: performance targets (release build); prints medians and the slash-command load table
##        (docs/performance.md). PostgreSQL runs too when TEST_DATABASE_URL (or
##        BENCH_DATABASE_URL) is set. Only the bench targets are built: unit tests are not
##        compiled a second time in release.
bench:
	@# One invocation: the load bench (bins/gatehouse-server/benches/load.rs) gets the server
	@# binary from it, built with the same features, so nothing is compiled twice.
	rm -rf target/bench
	$(CARGO) bench --workspace --bench '*'
	@# The targets table, from the JSON the benchmarks above wrote (same features: nothing rebuilt).
	BENCH_SUMMARY=1 $(CARGO) bench --workspace --bench summary

## deny: licenses, bans and sources (advisories need the internet: run `cargo deny check` where it is reachable).
deny:
	@command -v cargo-deny >/dev/null || $(CARGO) install --locked cargo-deny
	$(CARGO) deny check bans licenses sources

doc:
	$(CARGO) doc --workspace --no-deps

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= duration command_grammar slack_signature slack_payload org_index iam_condition

## fuzz: every libFuzzer target in fuzz/ for FUZZ_SECONDS seconds each (default 60), one after
##       another; stops at the first crash (its input is in fuzz/artifacts/<target>/). Installs
##       cargo-fuzz if missing. RUSTC_BOOTSTRAP=1 lets the stable toolchain take the
##       sanitizer-coverage flags cargo-fuzz passes. New inputs go to fuzz/corpus/<target>/
##       (not committed); fuzz/seeds/<target>/ are the committed starting points.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t seeds/$$t && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 || exit 1; \
	done

clean-db:
	rm -f gatehouse.db gatehouse.db-wal gatehouse.db-shm
