// Status propagation helpers used across module boundaries (absl::Status / absl::StatusOr).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CADUCEUS_CONCAT_INNER(a, b) a##b
#define CADUCEUS_CONCAT(a, b) CADUCEUS_CONCAT_INNER(a, b)

// Returns from the current function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status caduceus_status_ = (expr);        \
    if (!caduceus_status_.ok()) return caduceus_status_; \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates a StatusOr, returns its status on error, else assigns.
#define ASSIGN_OR_RETURN(lhs, expr) \
  CADUCEUS_ASSIGN_OR_RETURN_IMPL(CADUCEUS_CONCAT(caduceus_statusor_, __LINE__), lhs, expr)
#define CADUCEUS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()
