/* placeholder: being written */
#include "nf_http.h"
