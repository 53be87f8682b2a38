# The two commands of the README. Both install what is missing first
# (scripts/setup.sh: PyTorch 2.11.0 and the test tools into .venv).
.PHONY: run test setup bench

EXPERIMENT ?= experiments/sft_pg_swissroll.ron

setup:
	@./scripts/setup.sh

# The default experiment: swiss roll, SFT-PG (B), T = 10, ending with Table 1.
run: setup
	cargo build --release --locked
	./target/release/rl-run $(EXPERIMENT)

# The whole test suite (what CI runs): formatting and lints first (of the
# build with MPI and NCCL, and of the collective crate without them, the
# only code that differs), then every test of every crate with them
# (data-parallel runs on two local ranks; NCCL's GPU test says it was
# skipped without two GPUs), the collective crate's own tests without them
# (several ranks refused), then the library examples (the first fails
# unless its fine-tuning halves its critic's cost, the second unless its
# pretraining and fine-tuning through the library's trainer go as expected).
test: setup
	cargo fmt --all --check
	cargo clippy --release --locked --workspace --all-targets --features nccl -- -D warnings
	cargo clippy --release --locked -p collective --all-targets -- -D warnings
	cargo test --release --locked --workspace --features nccl
	cargo test --release --locked -p collective --lib
	cargo run --release --locked --features nccl --example finetune_custom_critic
	cargo run --release --locked --features nccl --example trainer_from_parts

# Speed and memory against the PyTorch baseline (docs/performance.md).
bench: setup
	cargo bench --locked --bench sft_pg_iteration
	cargo bench --locked --bench pathwise_vs_pg
	cargo bench --locked --bench unet_step
	cargo bench --locked --bench sft_pg_round -- --chains 8
