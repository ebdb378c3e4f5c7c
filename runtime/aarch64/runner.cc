// lowbit's aarch64 host runner: loads a TVM library exported by `lowbit compile --target aarch64`,
// runs its Relax `main` on .npy inputs and writes each output as a .npy file.
//
// Usage: runner LIB.so OUT_DIR IN_0.npy [IN_1.npy ...]   (inputs in the program's input order)
// Writes OUT_DIR/out_0.npy, OUT_DIR/out_1.npy, ... in the program's output order. Any failure is
// one line on stderr and exit status 1. Only C-ordered, little-endian arrays of bool, int8..64,
// uint8..64 and float32/64 are read; that covers every lowbit graph boundary.
#include <dlpack/dlpack.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

struct NpyType {
  const char* descr;
  DLDataType dtype;
};

// The .npy descriptors this runner reads and writes, with their DLPack types.
const NpyType kTypes[] = {
    {"|b1", {kDLBool, 8, 1}},   {"|i1", {kDLInt, 8, 1}},    {"<i2", {kDLInt, 16, 1}},
    {"<i4", {kDLInt, 32, 1}},   {"<i8", {kDLInt, 64, 1}},   {"|u1", {kDLUInt, 8, 1}},
    {"<u2", {kDLUInt, 16, 1}},  {"<u4", {kDLUInt, 32, 1}},  {"<u8", {kDLUInt, 64, 1}},
    {"<f4", {kDLFloat, 32, 1}}, {"<f8", {kDLFloat, 64, 1}},
};

struct CpuAlloc {
  void AllocData(DLTensor* tensor) {
    tensor->data = std::malloc(std::max<size_t>(ffi::GetDataSize(*tensor), 1));
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

DLDataType DtypeOf(const std::string& descr, const std::string& path) {
  for (const NpyType& type : kTypes) {
    if (descr == type.descr) return type.dtype;
  }
  throw std::runtime_error(path + ": unsupported .npy dtype " + descr);
}

const char* DescrOf(DLDataType dtype) {
  for (const NpyType& type : kTypes) {
    if (type.dtype.code == dtype.code && type.dtype.bits == dtype.bits && dtype.lanes == 1) {
      return type.descr;
    }
  }
  throw std::runtime_error("output dtype code " + std::to_string(dtype.code) + " bits " +
                           std::to_string(dtype.bits) + " has no .npy descriptor here");
}

// The text between `'key': ` and the next `end` character in a .npy header dict.
std::string HeaderField(const std::string& header, const std::string& key, char open, char end,
                        const std::string& path) {
  size_t at = header.find("'" + key + "':");
  size_t start = at == std::string::npos ? at : header.find(open, at + key.size() + 3);
  size_t stop = start == std::string::npos ? start : header.find(end, start + 1);
  if (stop == std::string::npos) throw std::runtime_error(path + ": no '" + key + "' in header");
  return header.substr(start + 1, stop - start - 1);
}

ffi::Tensor ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    throw std::runtime_error(path + ": not a .npy file");
  }
  uint32_t header_size = 0;
  unsigned char size_bytes[4] = {0, 0, 0, 0};
  int width = magic[6] == 1 ? 2 : 4;
  in.read(reinterpret_cast<char*>(size_bytes), width);
  for (int i = width - 1; i >= 0; --i) header_size = header_size * 256 + size_bytes[i];
  std::string header(header_size, ' ');
  in.read(header.data(), header_size);
  if (HeaderField(header, "fortran_order", ' ', ',', path) != "False") {
    throw std::runtime_error(path + ": Fortran-ordered arrays are not read");
  }
  DLDataType dtype = DtypeOf(HeaderField(header, "descr", '\'', '\'', path), path);
  std::vector<int64_t> shape;
  std::stringstream dims(HeaderField(header, "shape", '(', ')', path));
  for (std::string dim; std::getline(dims, dim, ',');) {
    if (dim.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(dim));
  }
  ffi::Tensor tensor = ffi::Tensor::FromNDAlloc(
      CpuAlloc(), ffi::ShapeView(shape.data(), shape.size()), dtype, DLDevice{kDLCPU, 0});
  size_t bytes = ffi::GetDataSize(tensor);
  if (!in.read(static_cast<char*>(tensor.data_ptr()), static_cast<std::streamsize>(bytes))) {
    throw std::runtime_error(path + ": the file is shorter than its header says");
  }
  return tensor;
}

void WriteNpy(const ffi::Tensor& tensor, const std::string& path) {
  std::string shape;
  for (int64_t dim : tensor.shape()) shape += std::to_string(dim) + ", ";
  if (tensor.ndim() > 1) shape.resize(shape.size() - 2);
  std::string header = std::string("{'descr': '") + DescrOf(tensor.dtype()) +
                       "', 'fortran_order': False, 'shape': (" + shape + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // magic + header size: 64-byte aligned
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  uint16_t size = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(size & 0xff)).put(static_cast<char>(size >> 8));
  out << header;
  out.write(static_cast<const char*>(tensor.data_ptr()) + tensor.byte_offset(),
            static_cast<std::streamsize>(ffi::GetDataSize(tensor)));
  if (!out) throw std::runtime_error(path + ": cannot write");
}

ffi::Function Require(const ffi::Module& module, const std::string& name) {
  ffi::Optional<ffi::Function> function = module->GetFunction(name);
  if (!function.has_value()) throw std::runtime_error("the library has no function " + name);
  return function.value();
}

int Run(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " LIB.so OUT_DIR [IN.npy ...]\n";
    return 2;
  }
  ffi::Module library = ffi::Module::LoadFromFile(argv[1]);
  ffi::Module vm = Require(library, "vm_load_executable")().cast<ffi::Module>();
  constexpr int kPooledAllocator = 2;
  Require(vm, "vm_initialization")(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  std::vector<ffi::Tensor> inputs;
  for (int i = 3; i < argc; ++i) inputs.push_back(ReadNpy(argv[i]));
  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  ffi::Any result;
  Require(vm, "main").CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  std::vector<ffi::Tensor> outputs;
  if (auto single = result.as<ffi::Tensor>()) {
    outputs.push_back(*single);
  } else {
    for (const ffi::Any& item : result.cast<ffi::Array<ffi::Any>>()) {
      outputs.push_back(item.cast<ffi::Tensor>());
    }
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    WriteNpy(outputs[i], std::string(argv[2]) + "/out_" + std::to_string(i) + ".npy");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& err) {
    std::cerr << "runner: " << err.what() << "\n";
    return 1;
  }
}
