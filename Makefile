# Thin entry points. Everything installs what it needs: the pinned venv, the Docker engine and
# the Debian 12 systemd base image (built locally from Debian packages, never pulled).
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
HARNESS := tests/harness
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# The exact base image tag (a hash of its recipe) for molecule and the local deploy.
export KIMH_BASE_IMAGE ?= $(shell $(HARNESS)/base-image/build.sh --print-tag)

.PHONY: help setup venv docker image deploy test lint test-unit test-app test-roles test-stack lock clean-local

help:
	@echo "make deploy   deploy the whole stack into the local all-in-one container"
	@echo "make test     run every test: lint, app, molecule per role, stack scenarios"
	@echo "make setup    only install the toolchain, the Docker engine and the base image"
	@echo "make lint | test-unit | test-app | test-roles [ROLE=redis] | test-stack"

setup: venv docker image

venv:
	@$(HARNESS)/ensure-venv.sh $(VENV) requirements.txt

docker:
	@$(HARNESS)/ensure-docker.sh

image: docker
	@$(HARNESS)/base-image/build.sh

deploy: setup
	ansible-playbook -i inventories/local playbooks/local_up.yml playbooks/site.yml

test: setup
	@python3 $(HARNESS)/run_suites.py

lint: venv
	@python3 $(HARNESS)/run_suites.py --only lint

test-unit: venv
	@python3 $(HARNESS)/run_suites.py --only unit

test-app: venv
	@python3 $(HARNESS)/run_suites.py --only app

test-roles: setup
	@python3 $(HARNESS)/run_suites.py --only roles $(if $(ROLE),--role $(ROLE))

test-stack: setup
	@python3 $(HARNESS)/run_suites.py --only stack

# Re-resolve the pinned toolchain after editing requirements.in.
lock:
	rm -rf .cache/lock-venv && python3 -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install -q -r requirements.in
	{ echo "# Pinned controller toolchain, resolved from requirements.in for Python 3.11 (make lock)."; \
	  .cache/lock-venv/bin/pip freeze --exclude pip; } > requirements.txt

# Remove the local all-in-one deployment (container and its volumes).
clean-local: venv
	ansible-playbook -i inventories/local playbooks/local_down.yml
