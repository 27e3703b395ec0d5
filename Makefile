.PHONY: run test bench clean

run:  ## install, set up the demo, and run the whole stack (Ctrl-C stops it)
	scripts/run

test:  ## install and run the whole test suite (SQLite, then PostgreSQL)
	scripts/test

bench:  ## run every benchmark (bench/run_all.py) and print one table; ARGS="--quick" for a short run
	scripts/bootstrap
	.venv/bin/python bench/run_all.py $(ARGS)

clean:
	rm -rf var/test test-artifacts
