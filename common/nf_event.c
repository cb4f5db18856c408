/* placeholder: being written */
#include "nf_event.h"
