"""What runs inside a HomePod: installing staged packages from the read-only share."""
