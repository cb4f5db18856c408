"""Builds well-formed Nexa API keys (DESIGN §5) for tests: nexa_ + 43 base64url chars
+ 6 base62 digits of the CRC32 of everything before them."""
import base64
import os
import zlib

B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def checksum(head: str) -> str:
    n = zlib.crc32(head.encode())
    digits = ""
    for _ in range(6):
        n, r = divmod(n, 62)
        digits = B62[r] + digits
    return digits


def make() -> str:
    head = "nexa_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    return head + checksum(head)
