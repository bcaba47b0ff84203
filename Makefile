# paygw: build the nginx module, run the local stack, run the tests.
#
#   make            install missing Debian packages, build the module
#   make run        ... and start Redis, MariaDB, simulator, nginx (run/)
#   make stop       stop what `make run` started
#   make build      build the module that ships (build/objs/)
#   make build-test ... and the test-only module t/module/ (build/objs-test/),
#                   which only the test harness loads
#   make test       build-test, then run the whole suite with prove, then
#                   scan every log the suite wrote for secrets (t/post)
#   make test-asan  the same against ASan/UBSan builds of both modules
#   make test-ha    the black-box API tests on clustered backends: every
#                   PayGW::Gateway on a Redis Cluster (3 masters, 3
#                   replicas) and a 3-node Galera cluster (PAYGW_TEST_HA=1);
#                   HA_SKIP below lists the files it leaves out and why.
#                   Not part of `make test` (slower: 9 more servers a file)
#   make fuzz       libFuzzer harnesses of t/fuzz/ under ASan/UBSan,
#                   FUZZ_SECONDS (30) each (0: replay the corpora only),
#                   FUZZ_ONLY="names" for some; prints executions and
#                   coverage (docs/operations.md, "Fuzzing")
#   make drill      fault drill under load (t/drill/drill.pl, DRILL_SECONDS
#                   180): kills, freezes, provider faults, reloads, then
#                   checks the invariants against the simulator's ledger
#   make drill-ha   the same on a Redis Cluster and a Galera cluster
#                   (t/drill/drill_ha.pl, also PAYGW_HA=1 make drill):
#                   a Redis master and the Galera writer SIGKILLed under
#                   load and restarted; a table per phase, the invariants
#   make bench      throughput/latency on loopback (bench/README.md)
#   make bench-ha   creates/s and GETs/s on the clusters vs single servers,
#                   back to back (BENCH_HA=1 bash bench/run.sh)
#   make bench-soak SOAK_SECONDS=600: a mixed load while the nginx
#                   processes' RSS is sampled (bench/README.md, "Soak")
#   make bench-profile  perf record -g of the nginx workers during a create
#                   and a GET run (bench/README.md, "Profile")
#   make image      build the container image paygw:dev (docker/) and run it
#                   once against the `make run` backends (scripts/image.sh)
#   make k8s-check  offline checks of k8s-ingress/: render every overlay,
#                   validate against the Kubernetes schemas, yamllint, metric
#                   names, nginx -t of every carried nginx.conf
#   make matrix     build nginx + module for every supported nginx version
#                   and run the black-box API tests against each
#                   (scripts/matrix.sh; sources from NGINX_SRC_DIR)
#
# PROVE_FLAGS adds prove options, e.g. `make test PROVE_FLAGS=-j4`.
#
# Other nginx versions: NGINX_SRC=<nginx source tree or .tar.gz> makes
# build, build-test, build-asan, test, test-asan and run build that nginx
# and the module for it under build/nginx-VERSION/ and use them.  Without
# it, Debian's nginx (1.22.1) and build/objs/.  PAYGW_NGINX=<nginx binary>
# and PAYGW_MODULE=<.so> (environment) choose what make run and the tests
# start, e.g. a module built elsewhere.

REPO        := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
MODULE      := $(REPO)/build/objs/ngx_http_paygw_module.so
ASAN_MODULE := $(REPO)/build/objs-asan/ngx_http_paygw_module.so
ASAN_TEST_MODULE := $(REPO)/build/objs-asan-test/ngx_http_paygw_test_module.so
PROVE       ?= prove
PROVE_FLAGS ?=
NGINX_SRC   ?=

ifneq ($(NGINX_SRC),)
NGX_SRC_ARG := --nginx-src="$(NGINX_SRC)"
NGX_BASE     = $(shell bash scripts/build.sh $(NGX_SRC_ARG) --where)
NGX_ENV      = PAYGW_NGINX="$(NGX_BASE)/sbin/nginx" \
               PAYGW_MODULE="$(NGX_BASE)/objs/ngx_http_paygw_module.so"
ASAN_MODULE  = $(NGX_BASE)/objs-asan/ngx_http_paygw_module.so
ASAN_TEST_MODULE = $(NGX_BASE)/objs-asan-test/ngx_http_paygw_test_module.so
ASAN_NGX_ENV = PAYGW_NGINX="$(NGX_BASE)/sbin/nginx"
endif

.PHONY: all deps build build-test build-asan test test-asan test-ha run stop \
        status clean bench image k8s-check matrix fuzz drill drill-ha bench-ha \
        bench-soak bench-profile

# Left out of `make test-ha`:
# - no PayGW::Gateway, so nothing the mode changes: they start their own
#   single servers (or none) to test the harness, the simulator, the Redis
#   and MySQL clients, /healthz and /readyz on one server, configuration,
#   the shared zone, provider TLS and the crypto vectors:
#   00-harness 05-sim-acquirer 06-sim-alipay-wechat 10-redis 20-mysql
#   21-mysql-wake 30-health 40-config 50-zone 79-provider-tls 80-vectors
#   (and 10-redis-upstream, 10-redis in the other mode)
# - about one Redis server: 88-redis-multiplex (a cluster is never
#   multiplexed)
# - already on clusters in every `make test`, killing their nodes:
#   88-redis-cluster 89-galera 89-galera-health
# - fault injection on "the" MySQL server: 64-faults stops the database
#   and starts it again, then renames a table on one node and expects the
#   gateway's next statement to fail; on Galera a restart makes a new
#   cluster and moves the writer, and a read may go to another node
#   (89-galera and `make drill` test node failures on the clusters)
HA_SKIP  := 00-harness 05-sim-acquirer 06-sim-alipay-wechat 10-redis \
            10-redis-upstream 88-redis-multiplex 20-mysql 21-mysql-wake 30-health 40-config 50-zone \
            64-faults 79-provider-tls 80-vectors 88-redis-cluster 89-galera \
            89-galera-health
HA_TESTS  = $(filter-out $(HA_SKIP:%=t/%.t),$(sort $(wildcard t/*.t)))

all: deps build

deps:
	bash scripts/deps.sh

build:
	bash scripts/build.sh $(NGX_SRC_ARG)

build-test:
	bash scripts/build.sh --test $(NGX_SRC_ARG)

build-asan:
	bash scripts/build.sh --asan $(NGX_SRC_ARG)

test: build-test
	rm -rf build/test-logs
	$(NGX_ENV) $(PROVE) -I t/lib $(PROVE_FLAGS) t/*.t
	$(PROVE) -I t/lib t/post

test-asan: build-asan
	rm -rf build/test-logs
	$(ASAN_NGX_ENV) PAYGW_MODULE=$(ASAN_MODULE) PAYGW_TEST_MODULE=$(ASAN_TEST_MODULE) \
	    PAYGW_ASAN=1 $(PROVE) -I t/lib $(PROVE_FLAGS) t/*.t
	$(PROVE) -I t/lib t/post

test-ha: build-test
	rm -rf build/test-logs
	$(NGX_ENV) PAYGW_TEST_HA=1 $(PROVE) -I t/lib $(PROVE_FLAGS) $(HA_TESTS)
	$(PROVE) -I t/lib t/post

run: deps build
	$(NGX_ENV) bash scripts/stack.sh start

# NGINX_SRC_DIR: where nginx-VERSION.tar.gz (or nginx-VERSION/) are;
# versions without sources there are reported as skipped.
matrix: deps
	bash scripts/matrix.sh

stop:
	bash scripts/stack.sh stop

status:
	bash scripts/stack.sh status

clean:
	-@[ ! -d run ] || bash scripts/stack.sh stop
	rm -rf build run

fuzz:
	bash scripts/fuzz.sh

# PAYGW_HA=1 make drill is make drill-ha
drill: build-test
	perl -I t/lib t/drill/$(if $(filter 1,$(PAYGW_HA)),drill_ha.pl,drill.pl)

drill-ha: build-test
	perl -I t/lib t/drill/drill_ha.pl

bench: build
	bash bench/run.sh

bench-ha: build
	BENCH_HA=1 bash bench/run.sh

bench-soak: build
	bash bench/run.sh --soak

bench-profile: build
	bash bench/run.sh --profile

image:
	bash scripts/image.sh

k8s-check: deps build
	bash scripts/k8s-check.sh
