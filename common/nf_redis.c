/* placeholder: being written */
#include "nf_redis.h"
