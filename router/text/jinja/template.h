// A parsed Jinja template (the subset chat templates use). Parse once at load time, render
// many times; Render is const and thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "router/text/jinja/ast.h"
#include "router/text/jinja/value.h"

namespace caduceus::text::jinja {

class Template {
 public:
  // INVALID_ARGUMENT naming construct and line for syntax errors and unsupported features.
  static absl::StatusOr<std::unique_ptr<Template>> Parse(std::string_view source);

  // `context` holds the template's variables. Errors (raise_exception, type errors) are
  // INVALID_ARGUMENT. strftime_now() formats `now` in `zone`.
  absl::StatusOr<std::string> Render(const ValueDict& context) const;
  absl::StatusOr<std::string> Render(const ValueDict& context, absl::Time now, absl::TimeZone zone) const;

 private:
  explicit Template(Body body) : body_(std::move(body)) {}
  Body body_;
};

}  // namespace caduceus::text::jinja
