// IncrementalDetokenizer is declared beside Tokenizer in tokenizer.h (one include for users);
// this header exists so code that only streams text can say what it needs.
#pragma once

#include "router/text/tokenizer.h"
