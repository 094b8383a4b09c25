# Makefile — the two commands of the README, a thin layer over CMake.
#   make run    install missing system packages (as root, apt-get), build, run the main job
#               (jobs/stories260k.yaml: the bundled stories260K model) under mpirun -np 2
#   make test   install missing packages, build with -Werror, run every CTest test
# Other targets: deps, build, bench, clean. Variables: BUILD (build dir), NP (ranks), CMAKE_ARGS.
BUILD ?= build
NP ?= 2
JOB ?= jobs/stories260k.yaml
CMAKE_ARGS ?=
CTEST_ARGS ?=
JOBS ?= $(shell nproc)

DEB_PACKAGES = build-essential cmake pkg-config openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools \
  libzstd-dev zstd libjansson-dev libyaml-dev libxxhash-dev libssl-dev libopenblas-dev libcmocka-dev \
  python3 python3-pip munge slurmctld slurmd slurm-client
PY_PACKAGES = numpy h5py hdf5plugin

.PHONY: run test deps pydeps build bench clean

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else echo "missing Debian packages:$$missing -- run as root or: sudo apt-get install$$missing"; exit 1; fi; \
	fi

pydeps:
	@python3 -c "import numpy, h5py, hdf5plugin" 2>/dev/null || \
	  python3 -m pip install --quiet --disable-pip-version-check $(PY_PACKAGES) || \
	  python3 -m pip install --quiet --disable-pip-version-check --break-system-packages $(PY_PACKAGES)

build: deps
	cmake -S . -B $(BUILD) -DTQ_WERROR=ON $(CMAKE_ARGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

run: build
	@export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; \
	mpirun --oversubscribe -np $(NP) $(BUILD)/tqpipe run $(JOB)

test: build pydeps
	cd $(BUILD) && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
	  ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

bench: build
	bash tests/bench/run_all.sh $(BUILD)

clean:
	rm -rf $(BUILD)
