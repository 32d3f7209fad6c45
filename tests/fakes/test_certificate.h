// Throwaway X.509 certificates for tests: a self-signed CA and a leaf
// certificate it signs (for a server, or a client of mutual TLS), made at run
// time with OpenSSL's EVP API (ECDSA P-256), so no key material is ever
// committed and clients can trust exactly this CA.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace aichat::fakes {

struct TestCertificate {
  std::string ca_pem;    // what a client trusts (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, ca_pem)
  std::string cert_pem;  // the server's certificate followed by the CA (its chain)
  std::string key_pem;   // the server's private key, PKCS#8
};

// subjectAltName = the given DNS names and IP addresses; valid from an hour ago
// for 30 days.
absl::StatusOr<TestCertificate> MakeTestCertificate(const std::vector<std::string>& dns_names,
                                                    const std::vector<std::string>& ip_addresses);

}  // namespace aichat::fakes
