"""Writes a small MaxMind City database for the geolocation tests.

Usage: geo_database.py OUTPUT NETWORK=LATITUDE,LONGITUDE,CITY ...

Each network (such as 127.0.0.2/32) gets a GeoIP2 City record with the
given location, so tests can place loopback addresses in distant cities.
"""

import sys

from mmdb_writer import MMDBWriter, MmdbF64, MmdbU16
from netaddr import IPSet


def main() -> None:
    output, entries = sys.argv[1], sys.argv[2:]
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-City",
        languages=["en"],
        description="castellan test locations",
    )
    for entry in entries:
        network, place = entry.split("=", 1)
        latitude, longitude, city = place.split(",", 2)
        writer.insert_network(
            IPSet([network]),
            {
                "city": {"names": {"en": city}},
                "location": {
                    "accuracy_radius": MmdbU16(20),
                    "latitude": MmdbF64(float(latitude)),
                    "longitude": MmdbF64(float(longitude)),
                },
            },
        )
    writer.to_db_file(output)


if __name__ == "__main__":
    main()
