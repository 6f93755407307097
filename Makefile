# Gatehouse developer tasks. Every target works on a fresh machine with only the Rust toolchain.
CARGO ?= cargo
CONFIG ?= gatehouse.example.toml

.PHONY: run test test-sqlite test-postgres lint fmt bench deny doc clean-db

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
	$(CARGO) bench --workspace --bench '*'

## deny: licenses, bans and sources (advisories need the internet: run `cargo deny check` where it is reachable).
deny:
	@command -v cargo-deny >/dev/null || $(CARGO) install --locked cargo-deny
	$(CARGO) deny check bans licenses sources

doc:
	$(CARGO) doc --workspace --no-deps

clean-db:
	rm -f gatehouse.db gatehouse.db-wal gatehouse.db-shm
