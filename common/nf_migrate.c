/* placeholder: being written */
#include "nf_migrate.h"
