#pragma once
#include <sightline/features.hpp>
#include <sightline/storage.hpp>

#include <span>
#include <string>

namespace sightline::host {

// One item's features under one extractor signature, as persisted in the gallery storage.
// Layout: "SLFR" | u32 version | u64 payload size | u64 FNV-1a checksum of payload | payload.
struct FeatureRecord {
    std::string signature;
    std::string item_id;
    cv::Size image_size;  // the working-size image the features were extracted from
    Features features;
};

constexpr std::uint32_t kFeatureRecordVersion = 1;

Bytes encode_record(const FeatureRecord& record);
// Throws Error(data_loss) naming `what` and the defect: bad magic, version, size, checksum.
FeatureRecord decode_record(std::span<const std::uint8_t> bytes, const std::string& what);

}  // namespace sightline::host
