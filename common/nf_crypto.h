#pragma once
/*
 * nf_crypto: libsodium-backed primitives and the API key format of DESIGN §5:
 *   "nexa_" + 43 base64url chars (32 random bytes) + 6-char checksum
 * The checksum is CRC32 (IEEE) of the first 48 characters, written as 6 base62 digits
 * (0-9A-Za-z, most significant first, zero padded), so a mistyped key is refused offline.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NF_APIKEY_PREFIX "nexa_"
#define NF_APIKEY_LEN 54         /* 5 + 43 + 6 */
#define NF_APIKEY_DISPLAY_LEN 12 /* characters kept for display */
#define NF_SHA256_HEX_LEN 64

/* Initialises libsodium; call once at start. -1 on failure. */
int nf_crypto_init(void);
void nf_crypto_random(void *buf, size_t len);
void nf_crypto_sha256(const void *data, size_t len, uint8_t out[32]);
/* Lowercase hex, NUL-terminated (65 bytes). */
void nf_crypto_sha256_hex(const void *data, size_t len, char out[NF_SHA256_HEX_LEN + 1]);
/* Constant-time comparison of two equal-length buffers. */
bool nf_crypto_equal(const void *a, const void *b, size_t len);
/* base64url without padding; out must hold 4*ceil(len/3)+1. Returns chars written. */
size_t nf_crypto_b64url(const void *data, size_t len, char *out, size_t outlen);
uint32_t nf_crypto_crc32(const void *data, size_t len);
/* Random url-safe token of `bytes` random bytes (for session and worker tokens). */
void nf_crypto_token(size_t bytes, char *out, size_t outlen);

/* A new API key into out (NF_APIKEY_LEN + 1 bytes). */
void nf_crypto_apikey_new(char out[NF_APIKEY_LEN + 1]);
/* true when key has the prefix, the length, the alphabet and a matching checksum. */
bool nf_crypto_apikey_valid(const char *key);
