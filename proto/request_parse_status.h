// gRPC answers a request that does not parse with INTERNAL and an empty message. For the public
// API that is wrong twice: it is the client's fault (INVALID_ARGUMENT), and the usual cause is a
// string field holding invalid UTF-8, which proto3 rejects while parsing, before the router's own
// validation could name it. These serialization traits keep gRPC's protobuf (de)serialization and
// only replace that status.
//
// Force-included (-include) into every translation unit that links caduceus_proto (see
// proto/CMakeLists.txt), so that all of them see the same specializations.
#pragma once

#include <grpcpp/impl/codegen/proto_utils.h>


namespace grpc {

// The generated services deserialize through their base class (RpcMethodHandler's
// BaseRequestType is protobuf::MessageLite), so that is the type to specialize. It covers every
// gRPC message of the process: a message that does not parse is the sender's fault everywhere.
template <>
class SerializationTraits<protobuf::MessageLite, void> {
 public:
  static Status Serialize(const protobuf::MessageLite& msg, ByteBuffer* bb, bool* own_buffer) {
    return GenericSerialize<ProtoBufferWriter, protobuf::MessageLite>(msg, bb, own_buffer);
  }
  static Status Deserialize(ByteBuffer* buffer, protobuf::MessageLite* msg) {
    Status s = GenericDeserialize<ProtoBufferReader, protobuf::MessageLite>(buffer, msg);
    if (s.ok()) return s;
    return Status(StatusCode::INVALID_ARGUMENT,
                  "the message does not parse as " + msg->GetTypeName() +
                      ": a string field holds invalid UTF-8, or the bytes are not that message");
  }
};

}  // namespace grpc
