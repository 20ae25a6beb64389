"""The E-utilities core every caller shares: policy, requests, response checks, XML and input parsing."""
