// Recursive-descent parser from tokens to the AST in ast.h. Every construct outside the
// supported subset (macro, include, call, unknown filters/tests/functions/methods, ...) is
// rejected here with INVALID_ARGUMENT naming the construct and its line.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "router/text/jinja/ast.h"

namespace caduceus::text::jinja {

// Nesting limit for blocks and expressions: deep enough for any real template, shallow enough
// that neither the parser nor the tree-walking evaluator can exhaust the stack.
inline constexpr int kMaxNesting = 64;
// Height limit of one expression tree (chains like `a ~ b ~ c ...` included).
inline constexpr int kMaxExpressionHeight = 256;

absl::StatusOr<Body> Parse(std::string_view source);

}  // namespace caduceus::text::jinja
