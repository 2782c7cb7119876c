"""Over-the-air updates: signed bundles (bundle.py), rollouts in waves gated on health
(rollout.py, pure) and their MQTT shell (deployer.py). docs/ota.md."""
