/* placeholder: being written */
#include "nf_pg.h"
