#pragma once
// The ranking step every vote-counting index ends with (index-bruteforce, index-faiss): an item's
// score is its number of correspondences; best first, ties by id, at most k.
#include <algorithm>
#include <utility>
#include <vector>

#include "sightline/index.hpp"

namespace sightline {

// by_item: any map whose values are Candidates with id and correspondences filled in; emptied.
template <class Map>
std::vector<Candidate> rank_by_votes(Map& by_item, std::size_t k) {
    std::vector<Candidate> out;
    out.reserve(by_item.size());
    for (auto& [_, c] : by_item) {
        c.score = static_cast<double>(c.correspondences.size());
        out.push_back(std::move(c));
    }
    by_item.clear();
    std::sort(out.begin(), out.end(),
              [](const Candidate& a, const Candidate& b) { return a.score != b.score ? a.score > b.score : a.id < b.id; });
    if (out.size() > k) out.resize(k);
    return out;
}

}  // namespace sightline
