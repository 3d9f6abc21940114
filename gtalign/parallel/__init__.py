"""Device meshes and logical-axis sharding rules for data, FSDP and tensor parallelism."""
