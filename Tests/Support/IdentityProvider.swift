import _CryptoExtras
import Crypto
import Foundation
import JWTKit
import SyncModel
import SyncServer

/// An identity provider: an RSA, a P-256 and an Ed25519 key, its JWKS (public halves only), and a
/// jwt-kit key collection that signs with the private halves.
struct IdentityProvider {
    static let kids = ["rs256-key", "es256-key", "eddsa-key"]
    let keys = JWTKeyCollection()
    let jwks: String

    init() async throws {
        let rsa = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let p256 = P256.Signing.PrivateKey()
        let ed25519 = Curve25519.Signing.PrivateKey()
        await keys.add(rsa: try Insecure.RSA.PrivateKey(backing: rsa), digestAlgorithm: .sha256, kid: JWKIdentifier(string: "rs256-key"))
        await keys.add(ecdsa: try ES256PrivateKey(backing: p256), kid: JWKIdentifier(string: "es256-key"))
        await keys.add(eddsa: EdDSA.PrivateKey(backing: ed25519), kid: JWKIdentifier(string: "eddsa-key"))
        let primitives = try rsa.publicKey.getKeyPrimitives()
        let (modulus, exponent) = (primitives.modulus, primitives.publicExponent)
        let point = p256.publicKey.x963Representation
        let b64 = TestServer.base64URL
        jwks = """
            {"keys": [
              {"kty": "RSA", "kid": "rs256-key", "alg": "RS256", "use": "sig", "n": "\(b64(modulus))", "e": "\(b64(exponent))"},
              {"kty": "EC", "kid": "es256-key", "alg": "ES256", "crv": "P-256", "x": "\(b64(point[1...32]))", "y": "\(b64(point[33...]))"},
              {"kty": "OKP", "kid": "eddsa-key", "alg": "EdDSA", "crv": "Ed25519", "x": "\(b64(ed25519.publicKey.rawRepresentation))"}
            ]}
            """
    }
}
