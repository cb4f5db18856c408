/*
 * What a client controls in the headers the gateway reads before anything else: the API
 * key (X-Nexa-Api-Key, Authorization: Bearer), the session cookie, and Range.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gw.h"
#include "nf_crypto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *f[4];
    fuzz_fields(data, size, f, NULL, 4);
    char key[NF_APIKEY_LEN + 1], tok[GW_SESSION_TOKEN_LEN + 1];
    if (gw_keys_extract(f[0][0] ? f[0] : NULL, f[1][0] ? f[1] : NULL, key) == GW_KEY_OK &&
        !nf_crypto_apikey_valid(key))
        abort(); /* an accepted key must pass the offline check */
    (void)gw_keys_session_cookie(f[2], tok);
    long long first = -1, last = -1, sizes[] = {0, 1, 1000, 1LL << 40};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        if (gw_range_parse(f[3], sizes[i], &first, &last) == GW_RANGE_PART &&
            (first < 0 || last < first || last >= sizes[i]))
            abort(); /* a range outside the object */
    }
    free(f[0]);
    return 0;
}
