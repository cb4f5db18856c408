/* placeholder: being written */
#include "nf_metrics.h"
