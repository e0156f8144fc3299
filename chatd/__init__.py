"""chatd: one chat hub serving PyChat's line protocol and ASVT-chat's binary protocol."""

__version__ = "0.1.0"
