"""The suite's library: the engine (`core`), the data layer (`data`), seeding, and the EnNAS method (`method`)."""
