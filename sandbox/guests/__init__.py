"""Sandbox VMs that run real guests: a small Debian built from packages
(`build`), booted by qemu (`boot`, `runner`), managed for the engine
(`manager`: `engine.guests`), with a records workload and its verifier
(`records`). docs/sandbox.md "Running guests" describes them."""
