/* placeholder: being written */
#include "nf_cfg.h"
