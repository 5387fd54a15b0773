# The two commands a new user needs:
#   make demo   set up (if needed) and run the main job on the embedded default
#   make test   set up (if needed) and run the whole test suite
# Set-up is tools/setup.sh: idempotent, it rebuilds only what changed.
.PHONY: setup test demo bench clean

setup:
	@bash tools/setup.sh

test: setup
	@bash tools/run_tests.sh

demo: setup
	@bash tools/run_demo.sh

bench: setup
	@bash -c '. tools/ros_env.sh && awml-deploy bench'

clean:
	rm -rf build install log work_dirs
