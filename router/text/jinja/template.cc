#include "router/text/jinja/template.h"

#include "common/status_macros.h"
#include "router/text/jinja/evaluator.h"
#include "router/text/jinja/parser.h"

namespace caduceus::text::jinja {

absl::StatusOr<std::unique_ptr<Template>> Template::Parse(std::string_view source) {
  ASSIGN_OR_RETURN(Body body, jinja::Parse(source));
  return std::unique_ptr<Template>(new Template(std::move(body)));
}

absl::StatusOr<std::string> Template::Render(const ValueDict& context) const {
  return Render(context, absl::Now(), absl::LocalTimeZone());
}

absl::StatusOr<std::string> Template::Render(const ValueDict& context, absl::Time now,
                                             absl::TimeZone zone) const {
  Evaluator evaluator(context, now, zone);
  std::string out;
  RETURN_IF_ERROR(evaluator.Run(body_, out));
  return out;
}

}  // namespace caduceus::text::jinja
