/* placeholder: being written */
#include "nf_app.h"
