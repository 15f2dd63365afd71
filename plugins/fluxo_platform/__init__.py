"""What only the platform reads, outside the Glue library: settings, the warehouse, lake access
without Spark (lakefs), Glue packaging and deploy, the local JVM side (jvm), warm interpreters for
local stage runs (stage_pool)."""
