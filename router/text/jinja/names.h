// Name tables of the supported Jinja subset: which filters, tests, global functions, methods
// and tags exist. The parser consults them so unsupported names fail at load time.
#pragma once

#include <optional>
#include <string_view>

#include "router/text/jinja/ast.h"

namespace caduceus::text::jinja {

std::optional<Filter> LookupFilter(std::string_view name);
std::optional<Test> LookupTest(std::string_view name);
std::optional<Function> LookupFunction(std::string_view name);
std::optional<Method> LookupMethod(std::string_view name);
// Real Jinja tags this interpreter deliberately does not implement (macro, include, ...).
bool IsUnsupportedTag(std::string_view name);

}  // namespace caduceus::text::jinja
